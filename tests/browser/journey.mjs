// Drives the TapMask web page in Debian's headless Chromium with playwright-core (no browser
// download), against a running stack. Called by tests/integration/test_web.py:
//
//   node tests/browser/journey.mjs SCENARIO CONFIG_JSON
//
// SCENARIO: journey | rejected | failed. CONFIG_JSON: {baseUrl, outDir, chromium, clip, fps,
// width, height, frames, click: {frame, x, y}, textFile}. Progress lines go to stdout;
// "NEED corrupt <videoId>" asks the Python side to break the stored upload and answer "OK"
// on stdin; the last line is "RESULT <json>". Exit code 0 = every check passed.
import { createRequire } from "node:module";
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import os from "node:os";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "web", "package.json"));
const { chromium } = require("playwright-core");

const [scenario, rawConfig] = process.argv.slice(2);
const cfg = JSON.parse(rawConfig);
mkdirSync(cfg.outDir, { recursive: true });
const result = { scenario, checks: [], screenshots: [], consoleErrors: [] };
const WAIT = 60_000;
const JOB_WAIT = 240_000;

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
function log(...a) {
  console.log("STEP", ...a);
}
function check(cond, what, detail = "") {
  result.checks.push({ what, ok: !!cond, detail: String(detail).slice(0, 500) });
  if (!cond) throw new Error(`check failed: ${what}${detail ? ` — ${detail}` : ""}`);
  log("ok:", what);
}
async function shot(page, name) {
  const file = path.join(cfg.outDir, `${scenario}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  result.screenshots.push(file);
  log("screenshot", file);
}

async function launch() {
  const userDataDir = path.join(os.tmpdir(), `tapmask-chromium-${process.pid}-${Date.now()}`);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
    ],
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(WAIT);
  page.on("console", (m) => {
    // Expected 4xx answers (no masks, a deleted video) also log "Failed to load resource";
    // server errors are caught below by their status instead.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) result.consoleErrors.push(m.text());
  });
  page.on("response", (r) => {
    if (r.status() >= 500) result.consoleErrors.push(`HTTP ${r.status()} from ${r.request().method()} ${r.url()}`);
  });
  page.on("pageerror", (e) => result.consoleErrors.push(`pageerror: ${e.message}`));
  return { context, page };
}

async function signIn(page, user, tier) {
  await page.goto(cfg.baseUrl + "/");
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("Account name").fill(user);
  await page.getByLabel("Plan").selectOption(tier);
  await page.getByRole("button", { name: "Sign in as developer" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor();
  await page.getByTestId("who").filter({ hasText: user }).waitFor();
  check(true, `signed in as ${user} (${tier}) with a minted development token`);
}

/** Watch the upload progress bar: the largest value it showed. */
async function watchUploadBar(page) {
  await page.evaluate(() => {
    window.__uploadMax = -1;
    new MutationObserver(() => {
      const p = document.getElementById("upload-progress");
      if (p) window.__uploadMax = Math.max(window.__uploadMax, Number(p.value));
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
}

async function uploadClip(page, file) {
  await watchUploadBar(page);
  const answer = page.waitForResponse((r) => r.url().endsWith("/api/v1/upload") && r.request().method() === "POST");
  await page.locator('input[type="file"]').setInputFiles(file);
  const resp = await answer;
  return resp;
}

async function waitFrameShown(page, frame) {
  await page.locator(`[data-testid="stage"][data-frame="${frame}"][data-ready="true"]`).waitFor();
}

/** Screen position of a coded-frame pixel on the overlay. */
async function screenPoint(page, x, y) {
  const box = await page.getByTestId("overlay").boundingBox();
  const scale = Math.min(box.width / cfg.width, box.height / cfg.height);
  const left = box.x + (box.width - cfg.width * scale) / 2;
  const top = box.y + (box.height - cfg.height * scale) / 2;
  return { x: left + x * scale, y: top + y * scale };
}

async function tokenOf(page) {
  return page.evaluate(() => localStorage.getItem("tapmask.token"));
}

async function jobState(page) {
  return page.getByTestId("job-progress").getAttribute("data-state");
}

async function waitTerminal(page) {
  const seen = new Set();
  const deadline = Date.now() + JOB_WAIT;
  for (;;) {
    const st = await jobState(page).catch(() => null);
    if (st) seen.add(st);
    if (st === "complete" || st === "failed") return { state: st, seen: [...seen] };
    if (Date.now() > deadline) throw new Error(`the job did not finish in time (states seen: ${[...seen].join(", ")})`);
    await page.waitForTimeout(200);
  }
}

async function accessibleNames(page) {
  // Every visible form control has a name a screen reader can read.
  return page.evaluate(() => {
    const bad = [];
    for (const el of document.querySelectorAll("input, select, textarea, button")) {
      const r = el.getBoundingClientRect();
      const hidden = el.classList.contains("visually-hidden");
      if (!hidden && (r.width === 0 || r.height === 0)) continue;
      const named =
        el.getAttribute("aria-label") ||
        el.getAttribute("aria-labelledby") ||
        (el.labels && el.labels.length > 0) ||
        (el.tagName === "BUTTON" && el.textContent.trim());
      if (!named) bad.push(el.outerHTML.slice(0, 120));
    }
    return bad;
  });
}

/** Text whose colour contrast against what lies behind it is below WCAG AA (4.5:1, or 3:1
 * for large text). Semi-transparent backgrounds are blended over their ancestors'; disabled
 * controls (exempt in WCAG) and text laid over a video picture are left out. */
async function lowContrast(page) {
  return page.evaluate(() => {
    const rgba = (c) => {
      const m = c.match(/rgba?\(([^)]+)\)/);
      if (!m) return [0, 0, 0, 0];
      const v = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1];
    };
    const over = (top, below) => {
      const a = top[3];
      return [0, 1, 2].map((i) => top[i] * a + below[i] * (1 - a)).concat(1);
    };
    const lum = (c) => {
      const [r, g, b] = c.slice(0, 3).map((v) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const backdrop = (el) => {
      const layers = [];
      for (let e = el; e; e = e.parentElement) {
        if (e.tagName === "VIDEO" || e.classList.contains("stage")) return null;
        const bg = rgba(getComputedStyle(e).backgroundColor);
        if (bg[3] > 0) layers.push(bg);
        if (bg[3] >= 1) break;
      }
      let c = [255, 255, 255, 1];
      for (const l of layers.reverse()) c = over(l, c);
      return c;
    };
    const bad = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!el || !n.textContent.trim() || el.closest(".visually-hidden, .skip, [aria-hidden='true'], svg")) continue;
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      if (el.closest(":disabled") || el.closest("label")?.querySelector(":disabled")) continue;
      if (el.closest("figure") && el.closest("figcaption") === null) continue;
      const cs = getComputedStyle(el);
      if (cs.visibility === "hidden") continue;
      const bg = backdrop(el);
      if (!bg) continue;
      const fg = over(rgba(cs.color), bg);
      const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      const ratio = (a + 0.05) / (b + 0.05);
      const size = parseFloat(cs.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(cs.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) bad.push(`"${n.textContent.trim().slice(0, 40)}" ${ratio.toFixed(2)}:1 (${cs.color} on rgb(${bg.slice(0, 3).map(Math.round).join(",")}))`);
    }
    return bad;
  });
}

async function journey(page) {
  await signIn(page, cfg.user, "pro");
  const resp = await uploadClip(page, cfg.clip);
  check(resp.status() === 201, "the upload was accepted", resp.status());
  const videoId = (await resp.json()).videoId;
  await page.getByTestId("video-summary").filter({ hasText: `${cfg.width}×${cfg.height}` }).waitFor();
  check((await page.evaluate(() => window.__uploadMax)) === 100, "the upload progress bar reached 100 %", await page.evaluate(() => window.__uploadMax));
  await waitFrameShown(page, 0);
  const summary = await page.getByTestId("video-summary").innerText();
  check(summary.includes(`${cfg.frames} frames`) && summary.includes(`${cfg.fps} fps`), "the probed metadata is shown", summary);
  const canPlay = await page.evaluate(() => {
    const v = document.querySelector('[data-testid="stage"] video');
    return v && v.readyState >= 2 && v.videoWidth > 0;
  });
  check(canPlay, "the browser decodes the uploaded video");

  // Frame-accurate scrubbing: keyboard on the picture, the buttons and the slider.
  await page.getByTestId("overlay").focus();
  for (let i = 0; i < cfg.click.frame - 2; i++) await page.keyboard.press("ArrowRight");
  await page.getByRole("button", { name: "Next frame" }).click();
  await page.getByRole("button", { name: "Next frame" }).click();
  await page.getByRole("button", { name: "Previous frame" }).click();
  await page.getByRole("button", { name: "Next frame" }).click();
  await waitFrameShown(page, cfg.click.frame);
  const label = await page.getByTestId("frame-label").innerText();
  check(label.startsWith(`Frame ${cfg.click.frame + 1} / ${cfg.frames}`), "the frame counter follows the scrubbing", label);
  const t = await page.evaluate(() => document.querySelector('[data-testid="stage"] video').currentTime);
  const want = (cfg.click.frame + 0.5) / cfg.fps;
  check(Math.abs(t - want) < 0.5 / cfg.fps, "the video shows the middle of the chosen frame", `currentTime ${t}, wanted ${want}`);
  await page.getByRole("slider", { name: "Frame" }).fill(String(cfg.frames - 1));
  await waitFrameShown(page, cfg.frames - 1);
  await page.getByRole("slider", { name: "Frame" }).fill(String(cfg.click.frame));
  await waitFrameShown(page, cfg.click.frame);

  // Click the object (positive point): the mask preview of that frame appears over the
  // player; then shift-click the background (negative point).
  check((await page.getByTestId("preview-toggle").isChecked()) && (await page.getByLabel("Show mask preview").isVisible()), "a 'Show mask preview' toggle is on");
  const previewAnswer = page.waitForResponse((r) => r.url().endsWith(`/api/v1/videos/${videoId}/preview`) && r.request().method() === "POST");
  const p = await screenPoint(page, cfg.click.x, cfg.click.y);
  await page.mouse.click(p.x, p.y);
  const previewResp = await previewAnswer;
  const previewSent = previewResp.request().postDataJSON();
  check(previewSent.points.length === 1 && previewSent.points[0].frame === cfg.click.frame, "the preview is asked for the clicked point", JSON.stringify(previewSent));
  check(previewResp.status() === 200, "the preview is computed", previewResp.status());
  const pv = await previewResp.json();
  check(
    pv.frame === cfg.click.frame && pv.found && pv.bbox.x0 <= cfg.click.x && cfg.click.x < pv.bbox.x1 && pv.bbox.y0 <= cfg.click.y && cfg.click.y < pv.bbox.y1,
    "the preview mask holds the clicked point",
    JSON.stringify({ frame: pv.frame, bbox: pv.bbox }),
  );
  await page.locator(`[data-testid="mask-preview"][data-frame="${cfg.click.frame}"]`).waitFor();
  const pvStatus = await page.getByTestId("preview-status").innerText();
  check(/^Preview: object found, [\d.]+ % of the frame\.$/.test(pvStatus), "the preview's status says the object was found and its share of the frame", pvStatus);
  const onScreen = await page.getByTestId("mask-preview").boundingBox();
  check(onScreen && onScreen.width > 50 && onScreen.height > 20, "the mask overlay is drawn over the player", JSON.stringify(onScreen));
  await page.getByTestId("stage").screenshot({ path: path.join(cfg.outDir, `${scenario}-1a-mask-preview.png`) });
  result.screenshots.push(path.join(cfg.outDir, `${scenario}-1a-mask-preview.png`));
  // The toggle hides and shows it again, with the keyboard.
  await page.getByTestId("preview-toggle").focus();
  await page.keyboard.press("Space");
  await page.getByTestId("mask-preview").waitFor({ state: "detached" });
  check((await page.getByTestId("preview-status").innerText()) === "Mask preview off.", "the toggle hides the preview");
  await page.keyboard.press("Space");
  await page.getByTestId("mask-preview").waitFor();
  // On another frame the overlay is not drawn; the status offers to go back to it.
  await page.getByRole("button", { name: "Next frame" }).click();
  await waitFrameShown(page, cfg.click.frame + 1);
  check((await page.getByTestId("mask-preview").count()) === 0, "the preview is drawn only on its own frame");
  await page.getByRole("button", { name: `Show frame ${cfg.click.frame + 1}` }).click();
  await waitFrameShown(page, cfg.click.frame);
  await page.getByTestId("mask-preview").waitFor();
  check(true, "the status's button goes back to the previewed frame");
  const n = await screenPoint(page, cfg.width * 0.06, cfg.height * 0.1);
  await page.keyboard.down("Shift");
  await page.mouse.click(n.x, n.y);
  await page.keyboard.up("Shift");
  await page.getByTestId("point-item").nth(1).waitFor();
  check((await page.getByTestId("marker").count()) === 2, "two markers are drawn over the video");
  check((await page.locator(".marker.neg").count()) === 1, "the shift-click made a negative marker");

  // Optionally a box: drag one around the object with the box tool.
  await page.getByRole("radio", { name: "Drag a box" }).check();
  const r0 = await screenPoint(page, cfg.click.x - 40, cfg.click.y - 40);
  const r1 = await screenPoint(page, cfg.click.x + 40, cfg.click.y + 40);
  await page.mouse.move(r0.x, r0.y);
  await page.mouse.down();
  await page.mouse.move((r0.x + r1.x) / 2, (r0.y + r1.y) / 2, { steps: 4 });
  await page.mouse.move(r1.x, r1.y, { steps: 4 });
  await page.mouse.up();
  await page.locator("rect.box").waitFor();
  await page.getByRole("radio", { name: "Click points" }).check();

  // Options: mode with descriptions, blur strength, safety margin.
  for (const name of ["Privacy blur", "Pixelate", "Erase"]) {
    check(await page.getByRole("radio", { name }).isVisible(), `the mode "${name}" is offered`);
  }
  for (const name of ["Privacy blur", "Pixelate", "Erase"]) {
    const said = await page.getByRole("radio", { name }).evaluate((el) =>
      (el.getAttribute("aria-describedby") ?? "").split(" ").map((id) => document.getElementById(id)?.textContent?.trim() ?? "").join(" ").trim(),
    );
    check(said.length > 20 && !said.includes("\n"), `the mode "${name}" has a one-line description`, said);
  }
  await page.getByRole("radio", { name: "Privacy blur" }).check();
  await page.getByLabel(/Blur strength/).fill("51");
  await page.getByLabel(/Safety margin/).fill("10");
  const unnamed = await accessibleNames(page);
  check(unnamed.length === 0, "every control has an accessible name", unnamed.join(" | "));
  const faint = await lowContrast(page);
  check(faint.length === 0, "every text on the player page has WCAG AA contrast", faint.join(" | "));
  await shot(page, "1-click");

  const sent = page.waitForRequest((r) => r.url().endsWith("/api/v1/segment") && r.method() === "POST");
  const live = page.waitForRequest((r) => r.url().includes("/api/v1/events/"));
  await page.getByTestId("start").click();
  const body = (await sent).postDataJSON();
  check(body.videoId === videoId, "the job is for the uploaded video");
  const [pos, neg] = body.points;
  check(
    body.points.length === 2 && pos.label === 1 && neg.label === 0 && pos.frame === cfg.click.frame && neg.frame === cfg.click.frame,
    "a positive and a negative point on the clicked frame were sent",
    JSON.stringify(body.points),
  );
  check(Math.hypot(pos.x - cfg.click.x, pos.y - cfg.click.y) < 3, "the point lands on the clicked pixel", `${pos.x},${pos.y} vs ${cfg.click.x},${cfg.click.y}`);
  const b = body.box;
  check(
    b && b.frame === cfg.click.frame && Math.abs(b.x0 - (cfg.click.x - 40)) < 3 && Math.abs(b.y1 - (cfg.click.y + 40)) < 3,
    "the dragged box was sent",
    JSON.stringify(b),
  );
  check(body.mode === "blur" && body.options.blur_kernel === 51 && body.options.margin_px === 10, "mode, blur strength and margin were sent", JSON.stringify(body.options));

  const sse = await live;
  const sseHeaders = await sse.allHeaders();
  check(
    !sse.url().includes("token=") && (sseHeaders["authorization"] ?? "").startsWith("Bearer "),
    "live progress is followed over SSE with the token in a header, never in the URL",
    sse.url(),
  );

  const done = await waitTerminal(page);
  result.statesSeen = done.seen;
  const failure = done.state === "failed" ? await page.getByTestId("job-failed").innerText() : "";
  check(done.state === "complete", "the job completed", failure || done.seen.join(","));
  check(/Done/.test(await page.getByTestId("job-state").innerText()), "the stage name says it is done");
  const stages = await page.getByRole("list", { name: "Stages" }).innerText();
  check(
    ["Queued", "Reading the video", "Tracking the object", "Applying the effect", "Encoding", "Done"].every((s) => stages.includes(s)),
    "the progress names its stages",
    stages,
  );

  // Before/after comparison.
  await page.getByTestId("result").waitFor();
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid="after-video"]');
    return v && v.readyState >= 2 && v.videoWidth > 0;
  });
  check(await page.getByRole("slider", { name: /Comparison/ }).isVisible(), "a before/after slider is shown");
  // The wipe line through the object: half of it as uploaded, half blurred.
  await page.getByRole("slider", { name: /Comparison/ }).fill(String(Math.round((100 * cfg.click.x) / cfg.width)));
  await page.evaluate(
    ([t]) =>
      Promise.all(
        [...document.querySelectorAll(".compare video")].map(
          (v) => new Promise((res) => {
            v.addEventListener("seeked", res, { once: true });
            v.currentTime = t;
          }),
        ),
      ),
    [want],
  );
  await page.getByTestId("result").scrollIntoViewIfNeeded();
  await shot(page, "2-result");
  const faintResult = await lowContrast(page);
  check(faintResult.length === 0, "every text on the result page has WCAG AA contrast", faintResult.join(" | "));
  await page.getByRole("radio", { name: "Side by side" }).check();
  await page.getByTestId("result").screenshot({ path: path.join(cfg.outDir, `${scenario}-3-side-by-side.png`) });
  result.screenshots.push(path.join(cfg.outDir, `${scenario}-3-side-by-side.png`));

  // Downloads: the video, then the masks.
  const dl = page.waitForEvent("download");
  await page.getByRole("button", { name: /Download the video/ }).click();
  const video = await dl;
  const videoPath = path.join(cfg.outDir, `${scenario}-download.mp4`);
  await video.saveAs(videoPath);
  const head = readFileSync(videoPath).subarray(4, 8).toString("latin1");
  check(statSync(videoPath).size > 1000 && head === "ftyp", "the processed video downloads as an MP4", `${statSync(videoPath).size} bytes, ${head}`);
  result.downloadedVideo = videoPath;

  const masksDl = page.waitForEvent("download", { timeout: 20_000 }).catch(() => null);
  await page.getByRole("button", { name: /Download the masks/ }).click();
  const masks = await masksDl;
  if (masks) {
    const masksPath = path.join(cfg.outDir, `${scenario}-masks.zip`);
    await masks.saveAs(masksPath);
    check(readFileSync(masksPath).subarray(0, 2).toString("latin1") === "PK", "the masks download as a zip archive");
    result.masks = "zip";
  } else {
    const why = await page.getByRole("alert").last().innerText();
    check(why.length > 0, "when there are no masks, the page says why", why);
    result.masks = `none: ${why}`;
  }

  // Dashboard: tier, quota, job history, deleting the video.
  await page.getByRole("button", { name: "Dashboard" }).click();
  await page.locator(`[data-testid="job-row"][data-state="complete"]`).first().waitFor();
  check((await page.getByTestId("tier").innerText()) === "Pro", "the dashboard shows the tier");
  check((await page.getByTestId("quota-left").innerText()) === "Unlimited", "the dashboard shows the quota left");
  const used = await page.getByTestId("quota-used").innerText();
  check(/^\d+$/.test(used) && Number(used) >= 1, "the dashboard shows the quota used", used);
  const row = page.getByTestId("video-row").filter({ hasText: path.basename(cfg.clip) });
  await row.waitFor();
  await shot(page, "4-dashboard");
  const faintDash = await lowContrast(page);
  check(faintDash.length === 0, "every text on the dashboard has WCAG AA contrast", faintDash.join(" | "));

  // A job opened from the history shows its result again.
  await page.locator(`[data-testid="job-row"][data-state="complete"]`).first().getByRole("button", { name: /Open/ }).click();
  await page.getByTestId("result").waitFor();
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid="after-video"]');
    return v && v.readyState >= 2;
  });
  check(true, "a job opened from the history shows its result");
  await page.getByRole("button", { name: "Dashboard" }).click();
  await row.waitFor();

  // Phone width: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  check(overflow <= 391, "the dashboard fits a phone's width", `${overflow}px`);
  await shot(page, "5-phone-dashboard");

  await row.getByRole("button", { name: /Delete/ }).click();
  await page.getByRole("button", { name: "Yes, delete everything" }).click();
  await page.getByTestId("dashboard-status").filter({ hasText: "deleted" }).waitFor();
  await page.getByTestId("video-row").filter({ hasText: path.basename(cfg.clip) }).waitFor({ state: "detached" });
  const token = await tokenOf(page);
  const gone = await page.evaluate(
    async ([id, tok]) => (await fetch(`/api/v1/videos/${id}`, { headers: { Authorization: `Bearer ${tok}` } })).status,
    [videoId, token],
  );
  check(gone === 404, "the deleted video is gone from the API", gone);

  await page.getByRole("button", { name: "New video" }).click();
  await page.getByRole("heading", { name: "1. Upload a video" }).waitFor();
  const overflow2 = await page.evaluate(() => document.documentElement.scrollWidth);
  check(overflow2 <= 391, "the upload page fits a phone's width", `${overflow2}px`);
  await shot(page, "6-phone-upload");
}

async function rejected(page) {
  await signIn(page, cfg.user, "free");
  // Drag and drop this time: a text file renamed .mp4 dropped on the drop zone.
  await watchUploadBar(page);
  const answer = page.waitForResponse((r) => r.url().endsWith("/api/v1/upload") && r.request().method() === "POST");
  const text = readFileSync(cfg.textFile, "utf8");
  const dataTransfer = await page.evaluateHandle(
    ([body, name]) => {
      const dt = new DataTransfer();
      dt.items.add(new File([body], name, { type: "video/mp4" }));
      return dt;
    },
    [text, path.basename(cfg.textFile)],
  );
  await page.getByTestId("dropzone").dispatchEvent("dragover", { dataTransfer });
  await page.getByTestId("dropzone").dispatchEvent("drop", { dataTransfer });
  const resp = await answer;
  check(resp.status() === 415, "the API refuses the text file renamed .mp4", resp.status());
  const detail = (await resp.json()).detail;
  const shown = await page.getByTestId("upload-error").innerText();
  check(shown.includes(path.basename(cfg.textFile)) && shown.includes(detail), "the refusal is shown in words", shown);
  await shot(page, "1-refused");
}

async function failed(page) {
  // This whole scenario runs at a phone's width.
  await page.setViewportSize({ width: 390, height: 844 });
  await signIn(page, cfg.user, "free");
  const resp = await uploadClip(page, cfg.clip);
  const videoId = (await resp.json()).videoId;
  await waitFrameShown(page, 0);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  check(overflow <= 391, "the player fits a phone's width", `${overflow}px`);
  // The stored upload is broken after validation (as a lost or corrupted object would be):
  // the worker then cannot decode it, and the job fails with a reason.
  console.log(`NEED corrupt ${videoId}`);
  const answer = await stdinLines.next();
  check(answer.value === "OK", "the stored upload was corrupted", answer.value);
  await page.getByRole("slider", { name: "Frame" }).fill(String(cfg.click.frame));
  await waitFrameShown(page, cfg.click.frame);
  const p = await screenPoint(page, cfg.click.x, cfg.click.y);
  await page.mouse.click(p.x, p.y);
  await page.getByTestId("point-item").first().waitFor();
  // The preview cannot decode the broken upload: it says so in words.
  await page.locator('[data-testid="preview-status"][data-state="error"]').waitFor();
  const previewError = await page.getByTestId("preview-status").innerText();
  check(/^Preview unavailable: .*cannot be decoded/.test(previewError), "a preview that fails is explained in words", previewError);
  // Keyboard only: a second point typed by its coordinates, then the job started with Enter.
  const kbd = page.locator("details.kbd-point");
  await kbd.locator("summary").focus();
  await page.keyboard.press("Enter");
  await page.getByLabel(/^x \(/).focus();
  await page.keyboard.type(String(Math.round(cfg.click.x)));
  await page.keyboard.press("Tab");
  await page.keyboard.type(String(Math.round(cfg.click.y)));
  await page.keyboard.press("Enter");
  await page.getByTestId("point-item").nth(1).waitFor();
  const typed = await page.getByTestId("point-item").nth(1).innerText();
  check(typed.includes(`(${Math.round(cfg.click.x)}, ${Math.round(cfg.click.y)})`) && typed.includes(`frame ${cfg.click.frame + 1}`), "a point is placed with the keyboard alone", typed);
  await shot(page, "0-phone-player");
  await page.getByTestId("start").focus();
  await page.keyboard.press("Enter");
  const done = await waitTerminal(page);
  check(done.state === "failed", "the job failed", done.seen.join(","));
  const shown = await page.getByTestId("job-failed").innerText();
  const token = await tokenOf(page);
  const jobId = await page.evaluate(
    async ([tok]) => (await (await fetch("/api/v1/jobs", { headers: { Authorization: `Bearer ${tok}` } })).json()).items[0].jobId,
    [token],
  );
  const status = await page.evaluate(
    async ([id, tok]) => (await fetch(`/api/v1/status/${id}`, { headers: { Authorization: `Bearer ${tok}` } })).json(),
    [jobId, token],
  );
  check(status.error && shown.includes(status.error), "the page shows the job's reason", `${shown} / ${status.error}`);
  result.reason = status.error;
  await shot(page, "1-failed");
  await page.getByRole("button", { name: "Dashboard" }).click();
  const row = page.locator(`[data-testid="job-row"][data-state="failed"]`).first();
  await row.waitFor();
  check((await row.innerText()).includes(status.error), "the job history shows the failure and its reason");
  const left = await page.getByTestId("quota-left").innerText();
  check(/of \d+/.test(left), "a free account sees its quota left", left);
  const usedFree = Number(await page.getByTestId("quota-used").innerText());
  const [, leftN, limitN] = left.match(/(\d+) of (\d+)/).map(Number);
  check(Number.isInteger(usedFree) && usedFree + leftN === limitN, "quota used and left add up to the plan's limit", `${usedFree} used, ${left}`);
  await shot(page, "2-dashboard");
}

const scenarios = { journey, rejected, failed };
const watchdog = setTimeout(() => {
  console.log("RESULT " + JSON.stringify({ ...result, error: "the browser test ran out of time" }));
  process.exit(3);
}, 420_000);

let code = 0;
const { context, page } = await launch();
try {
  await scenarios[scenario](page);
} catch (e) {
  code = 1;
  result.error = String(e && e.stack ? e.stack : e).slice(0, 3000);
  await shot(page, "error").catch(() => undefined);
} finally {
  await context.close().catch(() => undefined);
  clearTimeout(watchdog);
}
console.log("RESULT " + JSON.stringify(result));
process.exit(code);
