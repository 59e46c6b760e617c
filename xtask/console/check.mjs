// The operator's console in headless chromium, as a person would use it; run by
// `cargo xtask console` (see xtask/src/console.rs), which starts the proxy and its servers.
//
//   node check.mjs URL PASSWORD_FILE PID_TO_KILL CHROMIUM AXE_JS SCREENSHOT
//
// Prints PASS or FAIL per check; exits 1 when any failed.
import { readFileSync } from "node:fs";
import puppeteer from "puppeteer-core";

const [url, passwordFile, victim, chromium, axePath, screenshot] = process.argv.slice(2);
const password = readFileSync(passwordFile, "utf8").split("\n")[0];
const axeSource = readFileSync(axePath, "utf8");
const PATIENCE = 20000;
let failures = 0;

function report(ok, what) {
  console.log(`${ok ? "PASS" : "FAIL"} ${what}`);
  if (!ok) failures++;
}

async function waitFor(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, { timeout: PATIENCE, polling: 200 }, arg);
    report(true, what);
    return true;
  } catch (e) {
    report(false, `${what}: ${e.message.split("\n")[0]}`);
    return false;
  }
}

// axe-core over the page as it is; serious and critical violations fail.
async function accessible(page, what) {
  // Evaluated over the DevTools protocol: the page's CSP (script-src 'self') stays in force
  // for the page itself.
  await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"] })
  );
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of result.violations) {
    console.log(`     axe ${v.impact}: ${v.id} (${v.nodes.length} node(s)): ${v.help}`);
  }
  report(bad.length === 0, `axe-core on ${what}: ${result.violations.length} violation(s), ${bad.length} serious or critical`);
}

async function call(path, body) {
  const resp = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return resp.status;
}

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  // Root in a container has no user namespace for chromium's sandbox.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1360, height: 900 });
  const problems = [];
  // Script errors and CSP violations; not failed loads (the 401 of the wrong password's
  // form, the browser's own /favicon.ico).
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(e.message));

  // 1. Not logged in: the console sends the browser to its login form.
  await page.goto(`${url}/console`, { waitUntil: "load" });
  report(new URL(page.url()).pathname === "/console/login", `an anonymous visit lands on the login form (${page.url()})`);
  const csp = (await page.goto(`${url}/console/login`)).headers()["content-security-policy"] || "";
  report(csp.includes("default-src 'none'") && csp.includes("script-src 'self'"), "the login page has a strict CSP");
  await accessible(page, "the login page");

  // 2. A wrong password is refused with a message; the right one opens the console.
  await page.type("#user", "admin");
  await page.type("#password", "not-the-password");
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  const alert = await page.$eval("[role=alert]", (e) => e.textContent).catch(() => "");
  report(/wrong/i.test(alert), `a wrong password is refused: "${alert}"`);
  await page.type("#user", "admin");
  await page.type("#password", password);
  await Promise.all([page.waitForNavigation(), page.keyboard.press("Enter")]);
  report(new URL(page.url()).pathname === "/console", "the right password opens the console");
  report(!page.url().includes(password), "the password is not in the URL");
  const cookies = await page.cookies();
  const session = cookies.find((c) => c.name === "mcp_console");
  report(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");

  // 3. The members appear, live.
  await waitFor(page, "pool alpha appears with two members up", () => {
    const pools = [...document.querySelectorAll("section.pool")];
    const alpha = pools.find((p) => p.querySelector("h3").textContent.includes("alpha"));
    return alpha && alpha.querySelectorAll("tbody .badge-up").length === 2;
  });
  await waitFor(page, "their delivery is shown (channel or long poll)", () =>
    [...document.querySelectorAll("section.pool tbody td")].some((td) => td.textContent === "channel" || td.textContent === "long poll")
  );

  // 4. Calls show up in the audit list.
  const ok = await call("/servers/alpha/message", {
    jsonrpc: "2.0", id: 1, method: "tools/call",
    params: { name: "echo", arguments: { text: "seen in the console" } },
  });
  const failed = await call("/servers/beta/message", {
    jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "no_such_tool", arguments: {} },
  });
  const nobody = await call("/servers/gamma/message", { jsonrpc: "2.0", id: 3, method: "tools/list" });
  report(ok === 200 && failed === 200 && nobody === 503, `three calls made (${ok}, ${failed}, ${nobody})`);
  await waitFor(page, "the echo call shows up in the audit list", () =>
    [...document.querySelectorAll("#audit tbody tr")].some((tr) => tr.textContent.includes("echo"))
  );
  await waitFor(page, "the failed calls are marked", () =>
    document.querySelectorAll("#audit tbody tr.failed").length >= 2
  );

  // 5. The filters, by keyboard: the tool filter keeps only echo.
  await page.focus("#f-tool");
  await page.keyboard.type("echo");
  await page.keyboard.press("Enter");
  await waitFor(page, "filtering by tool keeps only the echo call", () => {
    const rows = [...document.querySelectorAll("#audit tbody tr")];
    return rows.length >= 1 && rows.every((tr) => tr.textContent.includes("echo"));
  });
  await page.$eval("#f-tool", (e) => (e.value = ""));
  await page.click("#filters button[type=submit]");

  // 6. The keyboard path: Tab reaches the skip link first, then the controls, visibly.
  await page.reload({ waitUntil: "load" });
  await page.keyboard.press("Tab");
  const first = await page.evaluate(() => `${document.activeElement.tagName} ${document.activeElement.textContent.trim()}`);
  report(first === "A Skip to content", `the first Tab stop is the skip link ("${first}")`);
  const stops = [];
  for (let i = 0; i < 8; i++) {
    await page.keyboard.press("Tab");
    stops.push(await page.evaluate(() => document.activeElement.id || document.activeElement.tagName));
  }
  report(["f-pool", "f-status", "f-tool", "f-request"].every((id) => stops.includes(id)), `Tab reaches every filter (${stops.join(", ")})`);

  // 7. A killed member is marked down.
  process.kill(Number(victim), "SIGKILL");
  await waitFor(page, "the killed member is marked down", () =>
    [...document.querySelectorAll("section.pool tbody .badge-down")].length === 1
  );

  // 8. Accessible with data in it; then the screenshot.
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await accessible(page, "the console");
  report(problems.length === 0, `no script error or CSP violation in the page (${problems.join("; ")})`);
  await page.screenshot({ path: screenshot, fullPage: true });
  report(true, `screenshot saved to ${screenshot}`);
} catch (e) {
  report(false, `the check stopped: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failures === 0 ? 0 : 1);
