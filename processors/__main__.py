"""`python -m processors`: run the Faust worker with every agent."""

from processors.app import app

if __name__ == "__main__":
    app.main()
