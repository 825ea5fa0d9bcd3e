import { useState } from "react";
import { api, ApiError } from "../api";

/** Sign in with a token (pasted), or in development mode mint one with a single button. */
export function SignIn({ notice, onSignedIn }: { notice: string; onSignedIn: (token: string) => void }) {
  const [pasted, setPasted] = useState("");
  const [user, setUser] = useState("dev-user");
  const [tier, setTier] = useState<"pro" | "free">("pro");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function devSignIn() {
    setBusy(true);
    setError("");
    try {
      const res = await fetch("/api/v1/dev/token", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ user: user.trim() || "dev-user", tier }),
      });
      if (res.status === 404) {
        setError("Development sign-in is switched off on this server (TAPMASK_DEV_MODE). Paste a token instead.");
        return;
      }
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new ApiError(res.status, typeof body.detail === "string" ? body.detail : `HTTP ${res.status}`);
      const token = body.token ?? body.access_token ?? body.accessToken;
      if (!token) throw new ApiError(500, "The server answered without a token.");
      onSignedIn(token);
    } catch (e) {
      setError(e instanceof ApiError ? e.message : "The server cannot be reached.");
    } finally {
      setBusy(false);
    }
  }

  async function tokenSignIn(e: React.FormEvent) {
    e.preventDefault();
    const t = pasted.trim();
    if (!t) {
      setError("Paste your access token first.");
      return;
    }
    setBusy(true);
    setError("");
    try {
      localStorage.setItem("tapmask.token", t);
      await api.me();
      onSignedIn(t);
    } catch (err) {
      localStorage.removeItem("tapmask.token");
      setError(err instanceof ApiError ? `That token was refused: ${err.message}` : "The server cannot be reached.");
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="card signin" aria-labelledby="signin-title">
      <h1 id="signin-title">Sign in</h1>
      {notice ? <p className="notice" role="status">{notice}</p> : null}
      <div className="signin-grid">
        <div>
          <h2>Development mode</h2>
          <p className="hint">Mints a local token for a development account on this server.</p>
          <div className="row">
            <label>
              Account name
              <input value={user} onChange={(e) => setUser(e.target.value)} autoComplete="username" maxLength={64} />
            </label>
            <label>
              Plan
              <select value={tier} onChange={(e) => setTier(e.target.value as "pro" | "free")}>
                <option value="pro">Pro</option>
                <option value="free">Free</option>
              </select>
            </label>
          </div>
          <button type="button" className="primary" onClick={devSignIn} disabled={busy}>
            Sign in as developer
          </button>
        </div>
        <form onSubmit={tokenSignIn}>
          <h2>With an access token</h2>
          <label>
            Access token (JWT)
            <textarea value={pasted} onChange={(e) => setPasted(e.target.value)} rows={3} spellCheck={false} autoComplete="off" />
          </label>
          <button type="submit" disabled={busy}>
            Sign in with token
          </button>
        </form>
      </div>
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
    </section>
  );
}
