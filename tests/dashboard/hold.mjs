// Holds evenkeel's dashboard open for SECONDS (bench/dashboard_cost.sh measures what
// that costs the proxy). Environment: ADMIN, TOKEN, SECONDS. Prints the admin calls
// the page made.
import { chromium } from "playwright-core";

const { ADMIN, TOKEN, SECONDS } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage();
  let calls = 0;
  page.on("request", (r) => {
    if (!r.url().includes("/ui")) calls += 1;
  });
  await page.goto(`${ADMIN}/ui`);
  await page.fill("#token", TOKEN);
  await page.click("#login-form button");
  await page.waitForSelector("tr.backend");
  const start = calls;
  await new Promise((r) => setTimeout(r, Number(SECONDS) * 1000));
  console.log(`calls ${calls - start}`);
} finally {
  await browser.close();
}
