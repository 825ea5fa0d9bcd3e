import { useCallback, useEffect, useState } from "react";
import { api, ApiError, getToken, setToken, type Me } from "./api";
import { SignIn } from "./components/SignIn";
import { Workspace } from "./components/Workspace";
import { Dashboard } from "./components/Dashboard";

type View = "new" | "dashboard";

export function App() {
  const [token, setTok] = useState<string>(() => getToken());
  const [view, setView] = useState<View>("new");
  const [me, setMe] = useState<Me | null>(null);
  const [notice, setNotice] = useState<string>("");
  const [openJob, setOpenJob] = useState<string | null>(null);

  const signOut = useCallback((why = "") => {
    setToken(null);
    setTok("");
    setMe(null);
    setNotice(why);
  }, []);

  const onError = useCallback(
    (e: unknown) => {
      if (e instanceof ApiError && e.status === 401) signOut("Your sign-in has expired or was refused. Please sign in again.");
    },
    [signOut],
  );

  const refreshMe = useCallback(() => {
    if (!getToken()) return;
    api.me().then(setMe).catch(onError);
  }, [onError]);

  useEffect(() => {
    if (token) refreshMe();
  }, [token, refreshMe]);

  if (!token) {
    return (
      <Shell>
        <SignIn
          notice={notice}
          onSignedIn={(t) => {
            setToken(t);
            setTok(t);
            setNotice("");
          }}
        />
      </Shell>
    );
  }

  return (
    <Shell
      nav={
        <nav aria-label="Main" className="nav">
          <button type="button" className="tab" aria-current={view === "new" ? "page" : undefined} onClick={() => setView("new")}>
            New video
          </button>
          <button
            type="button"
            className="tab"
            aria-current={view === "dashboard" ? "page" : undefined}
            onClick={() => {
              setView("dashboard");
              refreshMe();
            }}
          >
            Dashboard
          </button>
          <span className="who" data-testid="who">
            {me ? (
              <>
                {me.userId ?? me.id} · <span className={`tier tier-${me.tier}`}>{me.tier === "pro" ? "Pro" : "Free"}</span>
              </>
            ) : null}
          </span>
          <button type="button" className="link" onClick={() => signOut("You are signed out.")}>
            Sign out
          </button>
        </nav>
      }
    >
      {view === "new" ? (
        <Workspace
          key={openJob ?? "new"}
          me={me}
          openJobId={openJob}
          onError={onError}
          onJobFinished={refreshMe}
          onNew={() => setOpenJob(null)}
        />
      ) : (
        <Dashboard
          me={me}
          onError={onError}
          onChanged={refreshMe}
          onOpenJob={(id) => {
            setOpenJob(id);
            setView("new");
          }}
        />
      )}
    </Shell>
  );
}

function Shell({ nav, children }: { nav?: React.ReactNode; children: React.ReactNode }) {
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <div className="brand">
          <span className="logo" aria-hidden="true">
            ◉
          </span>
          TapMask
          <span className="tagline">blur or erase anything in a video with one click</span>
        </div>
        {nav}
      </header>
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </>
  );
}
