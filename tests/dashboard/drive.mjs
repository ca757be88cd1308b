// Drives evenkeel's dashboard in headless Chromium, as tests/dashboard.rs describes.
// Environment: ADMIN (http://127.0.0.1:PORT), TOKEN, A and B (backend addresses: 3:1),
// SKEWED (a config text with A at weight 18), SHOTS (a folder for screenshots).
// Prints one "ok: ..." line per step; any failure throws (exit 1).
import { chromium } from "playwright-core";

const { ADMIN, TOKEN, A, B, SKEWED, SHOTS } = process.env;
const step = (what) => console.log(`ok: ${what}`);

/** Polls `check` (async, truthy when done) until `seconds` pass. */
async function until(seconds, what, check) {
  const end = Date.now() + seconds * 1000;
  let last;
  while (Date.now() < end) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what}: not within ${seconds} s (last: ${last})`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const dialogs = [];
  page.on("dialog", async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.accept();
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });

  // 1. Without the token: the login form, no data, and the API refuses the page.
  await page.goto(`${ADMIN}/ui`);
  await page.waitForSelector("#login-form");
  if (await page.isVisible("#app")) throw new Error("the data part is shown without a token");
  if ((await page.locator("tr.backend").count()) !== 0) throw new Error("backends shown without a token");
  // The API refuses the page's origin without the token (asked from another tab, so
  // the 401 is no console error of the page under test).
  const probe = await browser.newPage();
  await probe.goto(`${ADMIN}/ui`);
  const refused = await probe.evaluate(async () => (await fetch("/status")).status);
  await probe.close();
  if (refused !== 401) throw new Error(`GET /status without the token answered ${refused}`);
  step("without a token the page shows no data");

  // 2. With it: the live split, 75/25 within 5 s of traffic.
  await page.fill("#token", TOKEN);
  await page.click("#login-form button");
  const row = (address) => page.locator(`tr.backend[data-address="${address}"]`);
  await until(5, "75/25 shown", async () => {
    const a = Number(await row(A).getAttribute("data-observed"));
    const b = Number(await row(B).getAttribute("data-observed"));
    return Math.abs(a - 0.75) <= 0.05 && Math.abs(b - 0.25) <= 0.05 && `${a} ${b}`;
  });
  const shown = await row(A).locator("td.observed").innerText();
  // The capacity share beside the load ratio: of the usable backends (C has weight 0).
  const capacities = [await row(A).locator("td.capacity").innerText(), await row(B).locator("td.capacity").innerText()];
  if (capacities.join() !== "50.0%,50.0%") throw new Error(`capacity shares ${capacities}`);
  step(`3:1 weights shown as ${shown} / ${await row(B).locator("td.observed").innerText()}`);
  await page.screenshot({ path: `${SHOTS}/dashboard.png` });

  // 3. Drain B from the page: its share falls to 0%; enable it again.
  await row(B).locator("button.drain").click();
  // The monitor's window (up to 10 s) must roll past B's last requests.
  await until(30, "B drained to 0%", async () => {
    const b = Number(await row(B).getAttribute("data-observed"));
    return b <= 0.005 && (await row(B).innerText()).includes("draining") && `${b}`;
  });
  step(`draining B from the page: its share is ${await row(B).locator("td.observed").innerText()}`);
  await row(B).locator("button.enable").click();
  await until(5, "B back in traffic", async () => (await row(B).innerText()).includes("in traffic"));
  step("B enabled again");

  // 4. Markup from the server is text: a refused config's findings name it.
  const inForce = await page.inputValue("#config-text");
  const hostile = `"<img src=x onerror=alert(1)>" = 1\n${inForce}`;
  await page.fill("#config-text", hostile);
  await page.click("#preview");
  await until(5, "the hostile finding shown", async () =>
    (await page.innerText("#preview-result")).includes("<img src=x onerror=alert(1)>"),
  );
  const images = await page.locator("#preview-result img").count();
  if (images !== 0 || dialogs.length !== 0) throw new Error(`markup ran: ${images} img, dialogs ${dialogs}`);
  if (!(await page.isDisabled("#apply"))) throw new Error("a refused config can be applied");
  step("a name holding <img onerror> renders as text, and the refused config cannot be applied");

  // 5. A skewed apply: previewed (90% to A), applied, alarmed, rolled back by the guard.
  await page.fill("#config-text", SKEWED);
  await page.click("#preview");
  await until(5, "previewed", async () => !(await page.isDisabled("#apply")));
  await page.type("#config-text", " ");
  if (!(await page.isDisabled("#apply"))) throw new Error("text edited after the preview can be applied");
  await page.click("#preview");
  await until(5, "the preview's share", async () =>
    (await page.locator(`#preview-result tr[data-address="${A}"] td.share-after`).innerText()) === "90.0%",
  );
  step("the preview shows A going to 90.0%");
  await page.click("#apply");
  await until(5, "applied", async () => (await page.innerText("#apply-result")).startsWith("applied: version 2"));
  const alarm = await until(30, "the skewed apply's alarm", async () => {
    const keys = await page.locator("#alarms li").evaluateAll((items) => items.map((i) => [i.dataset.key, i.innerText]));
    const found = keys.find(([key]) => key.startsWith("load_ratio/") || key.startsWith("guard/"));
    return found && found[1];
  });
  step(`the skewed apply's alarm shown: ${alarm}`);
  await until(40, "the guard's rollback on the timeline", async () =>
    (await page.locator('#timeline li[data-kind="guard"]').allInnerTexts()).find((t) => t.includes("rolled_back")),
  );
  const ids = await page.locator("#timeline li").evaluateAll((items) => items.map((i) => i.dataset.id));
  if (new Set(ids).size !== ids.length) throw new Error(`events shown twice: ${ids}`);
  await page.selectOption("#filter-kind", "guard");
  const kinds = await page.locator("#timeline li").evaluateAll((items) => items.map((i) => i.dataset.kind));
  if (!kinds.length || kinds.some((k) => k !== "guard")) throw new Error(`filtered timeline: ${kinds}`);
  step(`the guard's rollback is on the timeline (${kinds.length} guard event(s) when filtered)`);
  await page.screenshot({ path: `${SHOTS}/dashboard-guard.png` });
  await page.selectOption("#filter-kind", "");

  // 6. A harmless change applied from the page, then the rollback button, confirmed:
  // history shows the rollback.
  await page.fill("#config-text", `${inForce}\n# a harmless change\n`);
  await page.click("#preview");
  await until(5, "previewed", async () => !(await page.isDisabled("#apply")));
  await page.click("#apply");
  await until(5, "applied", async () => (await page.innerText("#apply-result")).startsWith("applied: version 4"));
  const before = await until(5, "history of 4", async () => {
    const rows = await page.locator("#history tbody tr").count();
    return rows === 4 && rows;
  });
  await page.click("#rollback");
  await until(5, "rolled back", async () => (await page.innerText("#rollback-result")).startsWith("rolled back"));
  await until(5, "history shows it", async () => {
    const rows = await page.locator("#history tbody tr").count();
    const origin = await page.locator("#history tbody tr").first().getAttribute("data-origin");
    return rows === before + 1 && origin === "rollback";
  });
  if (!dialogs.some((d) => d.includes("Roll back"))) throw new Error(`no confirmation: ${dialogs}`);
  step("the rollback button asked first, rolled back, and history shows it");

  // 7. Forgetting the token clears the data: no backend, no config text, no journal.
  await page.click("#logout");
  const left = await page.evaluate(() => [
    document.querySelectorAll("tr.backend, #timeline li, #history tbody tr").length,
    document.getElementById("config-text").value.length,
    document.getElementById("filter-pool").options.length,
  ]);
  if (left.join() !== "0,0,1") throw new Error(`data left after logout: ${left}`);
  let calls = 0;
  page.on("request", (r) => {
    if (!r.url().includes("/ui")) calls += 1;
  });
  await page.waitForTimeout(2500);
  if (calls !== 0 || (await page.locator("tr.backend").count()) !== 0) throw new Error(`polling went on after logout: ${calls} calls`);
  if (errors.length) throw new Error(`page errors: ${errors}`);
  step("forgetting the token clears the page");
} finally {
  await browser.close();
}
