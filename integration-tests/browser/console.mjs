// The console, end to end in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core: no browser download). Run by integration-tests/tests/console_browser.rs
// against the real binary, which passes everything through the environment:
//
//   FEDBROKER_URL        the broker's origin (the console is at /console/)
//   ADMIN_TOKEN          an admin API token
//   ALLOWED_TOKEN        a home token the rules allow for TARGET (explained only)
//   REFUSED_TOKEN        a home token the rules refuse; REFUSED_REASON: the reason given
//   EXCHANGE_TOKEN       a fresh token exchanged (POST /token) while the tail is watched
//   TARGET, ALLOW_RULE, ISSUER_NAME
//   SCREENSHOT_DIR       where each page's screenshot is written
//   CHROMIUM             the browser (default /usr/bin/chromium)
//   PLAYWRIGHT_CORE      the playwright-core package's directory
//
// Each check prints `ok - ...`; the first failure prints `not ok - ...` and exits 1.
import { createRequire } from "node:module";
import path from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const require = createRequire(import.meta.url);
const { chromium } = require(env("PLAYWRIGHT_CORE"));

const base = env("FEDBROKER_URL");
const shots = env("SCREENSHOT_DIR");
const target = env("TARGET");
const secrets = [env("ADMIN_TOKEN"), env("ALLOWED_TOKEN"), env("REFUSED_TOKEN"), env("EXCHANGE_TOKEN")];

let step = "start";
function check(cond, what) {
  if (!cond) throw new Error(what);
  console.log(`ok - ${what}`);
}
async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}
/** No page may ever show a token. */
async function noSecrets(page) {
  const html = await page.content();
  for (const s of secrets) check(!html.includes(s), `${step}: no token in the page`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  // ---- desktop, 1280 px ----
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();

  step = "login redirect";
  const first = await page.goto(`${base}/console/`);
  check(first.ok() && page.url().endsWith("/console/login"), "without a session /console/ leads to /console/login");
  await shot(page, "01-login");

  step = "keyboard";
  await page.keyboard.press("Tab");
  check((await page.evaluate(() => document.activeElement?.textContent)) === "Skip to content",
    "the first Tab reaches the skip link");
  let tabs = 1;
  while (tabs < 4 && (await page.evaluate(() => document.activeElement?.id)) !== "token") {
    await page.keyboard.press("Tab");
    tabs += 1;
  }
  check((await page.evaluate(() => document.activeElement?.id)) === "token",
    `the token field is reached by keyboard (${tabs} Tabs: skip link, home link, field)`);
  check((await page.locator("label[for=token]").textContent()) === "Admin token", "the token field is labelled");

  step = "wrong token";
  await page.fill("#token", "not-an-admin-token-0123456789");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#login-error");
  check((await page.locator("#login-error").textContent()).includes("not an admin token"), "a wrong token is refused with a message");

  step = "login";
  await page.fill("#token", env("ADMIN_TOKEN"));
  await Promise.all([page.waitForURL(/\/console\/$/), page.click("form.stack button[type=submit]")]);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "fedbroker_console");
  check(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
  check(!session.value.includes(env("ADMIN_TOKEN")), "the session cookie does not hold the token");
  check((await page.locator("h1").textContent()) === "Overview", "logged in, the overview shows");
  await shot(page, "02-overview");

  step = "explain allowed";
  await page.click("nav >> text=Explain");
  check(await page.locator("nav a[aria-current=page]").textContent() === "Explain", "the navigation marks the current page");
  await page.fill("#subject_token", env("ALLOWED_TOKEN"));
  await page.fill("#audience", target);
  await Promise.all([page.waitForSelector("#decision"), page.click("form.stack button[type=submit]")]);
  check((await page.locator("#decision .outcome").textContent()) === "ALLOW", "a token the rules allow: ALLOW");
  check((await page.locator("#deciding-rule").textContent()) === env("ALLOW_RULE"), "the deciding rule is named");
  check((await page.locator("#verification").textContent()).includes("RS256"), "the verification steps show the algorithm");
  check((await page.locator("#issued-claims").textContent()).includes(`"aud"`), "the issued token's claims are shown");
  check((await page.locator("#subject_token").inputValue()) === "", "the token is not put back into the form");
  await noSecrets(page);
  await shot(page, "03-explain-allow");

  step = "explain refused";
  await page.fill("#subject_token", env("REFUSED_TOKEN"));
  await Promise.all([page.waitForNavigation(), page.click("form.stack button[type=submit]")]);
  check((await page.locator("#decision .outcome").textContent()) === "DENY", "a token the rules refuse: DENY");
  const reason = await page.locator("#reason").textContent();
  check(reason.includes(env("REFUSED_REASON")), `the refusal's reason is shown (${reason.trim()})`);
  check(await page.locator("#rules tbody tr").count() >= 1, "each rule is listed with its first failed condition");
  await noSecrets(page);
  await shot(page, "04-explain-deny");

  step = "issuers";
  await page.click("nav >> text=Issuers");
  check((await page.locator(`#issuer-${env("ISSUER_NAME")}`).textContent()) === env("ISSUER_NAME"), "the issuer is listed");
  await Promise.all([page.waitForNavigation(), page.click("text=Refetch keys of")]);
  check((await page.locator("p.note").textContent()).includes("Fetched the keys"), "the refetch button fetches the keys");
  await shot(page, "05-issuers");

  step = "rules";
  await page.click("nav >> text=Rules");
  const row = page.locator(`tr[data-rule="${env("ALLOW_RULE")}"]`).first();
  check((await row.textContent()).includes("fedbroker.yaml:"), "each rule shows its file and line");
  check((await page.locator("#generation").textContent()).trim() === "1", "the reload generation is shown");
  await shot(page, "06-rules");

  step = "decisions";
  await page.click("nav >> text=Decisions");
  await page.waitForFunction(() => document.getElementById("live-status")?.textContent.startsWith("Live"));
  const rowsBefore = await page.locator("#decisions tbody tr").count();
  const reply = await fetch(`${base}/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      subject_token: env("EXCHANGE_TOKEN"),
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      audience: target,
    }),
  });
  check(reply.status === 200, "an exchange while the tail is open succeeds");
  await page.waitForFunction((n) => document.querySelectorAll("#decisions tbody tr").length > n, rowsBefore);
  const newest = await page.locator("#decisions tbody tr").first().textContent();
  check(newest.includes("allow") && newest.includes(env("ALLOW_RULE")) && newest.includes(target),
    "the exchange's decision appears at the top of the live tail");
  await noSecrets(page);
  await shot(page, "07-decisions");

  step = "keys";
  await page.click("nav >> text=Keys");
  check((await page.locator("#active-kid").textContent()).trim().length > 0, "the signing key in use is named");
  await shot(page, "08-keys");

  step = "csrf";
  const explainUrl = `${base}/console/explain`;
  const badCsrf = await page.request.post(explainUrl, { form: { csrf: "forged", audience: target }, maxRedirects: 0 });
  check(badCsrf.status() === 403, "a form with a bad CSRF token is refused (403)");
  const anonymous = await browser.newContext();
  const noSession = await anonymous.request.post(explainUrl, { form: { csrf: "forged", audience: target }, maxRedirects: 0 });
  check(noSession.status() === 401, "a form without the session cookie is refused (401)");
  const noSessionPage = await anonymous.request.get(`${base}/console/rules`, { maxRedirects: 0 });
  check(noSessionPage.status() === 303, "a page without the session cookie answers 303");
  await anonymous.close();

  step = "logout";
  await Promise.all([page.waitForURL(/\/console\/login$/), page.click("form.logout button")]);
  const after = await page.goto(`${base}/console/rules`);
  check(after.ok() && page.url().endsWith("/console/login"), "after logout the pages lead to the login again");
  await context.close();

  // ---- phone ----
  step = "phone";
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const p = await phone.newPage();
  await p.goto(`${base}/console/login`);
  await p.fill("#token", env("ADMIN_TOKEN"));
  await Promise.all([p.waitForURL(/\/console\/$/), p.click("form.stack button[type=submit]")]);
  for (const [name, url] of [["09-phone-explain", "/console/explain"], ["10-phone-rules", "/console/rules"],
    ["11-phone-decisions", "/console/decisions"]]) {
    await p.goto(`${base}${url}`);
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `${url} fits a 390 px phone without scrolling sideways (overflow ${overflow}px)`);
    await shot(p, name);
  }
  await phone.close();
  console.log("all console checks passed");
} catch (e) {
  console.log(`not ok - ${step}: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
