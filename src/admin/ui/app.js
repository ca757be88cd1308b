// evenkeel's dashboard: plain JavaScript, no build step, no dependency.
//
// Everything shown comes from the admin API (the page never re-derives what the server
// knows): GET /status every second (the live split, health, alarms), GET /events (the
// journal), GET /config/history and /config/diff (the versions and what each changed),
// POST /config?dry_run=true (a preview) and POST /config, /config/rollback and
// /backends/{pool}/{address}/drain|enable (actions). The token goes in the
// Authorization header, from this tab's session storage; every text from the server is
// put in the page as text (textContent), never as HTML.

const TOKEN_KEY = "evenkeel-admin-token";
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
let timer = null;
let ticking = false;
let ticks = 0;
// Bumped at every login and logout: an answer to an older session is dropped.
let session = 0;
let opening = false;
let configLoaded = false;
let lastEvent = 0;
let events = [];
let shownVersion = null;
// The text the last preview judged appliable, and the version then in force.
let previewSeq = 0;
let previewed = null;
let previewedFor = null;

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "data") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

const percent = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
const ms = (x) => (x === null || x === undefined ? "–" : `${x.toFixed(1)} ms`);

class Unauthorized extends Error {}

/** Calls the admin API with the token; the JSON answer (or text). */
async function api(method, path, body) {
  if (!token) throw new Unauthorized();
  // A request that hangs must not hold the page: 10 s at most.
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}` },
    body,
    cache: "no-store",
    signal: AbortSignal.timeout(10000),
  });
  if (response.status === 401) throw new Unauthorized();
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  return { status: response.status, data };
}

function showLogin(message) {
  session += 1;
  clearInterval(timer);
  timer = null;
  token = null;
  configLoaded = false;
  previewed = null;
  previewSeq += 1;
  sessionStorage.removeItem(TOKEN_KEY);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  // Nothing the token protected stays in the page.
  for (const id of ["pools", "alarms", "timeline", "diff", "preview-result"]) $(id).replaceChildren();
  for (const id of ["apply-result", "rollback-result", "version", "updated"]) $(id).textContent = "";
  for (const id of ["filter-pool", "filter-kind"]) $(id).replaceChildren($(id).options[0]);
  $("history").tBodies[0].replaceChildren();
  $("config-text").value = "";
  $("apply").disabled = true;
  $("login-error").textContent = message || "";
  events = [];
  lastEvent = 0;
  shownVersion = null;
}

async function open() {
  if (timer) return;
  session += 1;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  timer = setInterval(tick, 1000);
  await tick();
}

async function tick(refreshHistory = false) {
  // One at a time: an action's refresh and the timer's never overlap.
  if (ticking || !token) return;
  ticking = true;
  const mine = session;
  const current = () => mine === session;
  try {
    if (!configLoaded) {
      const config = await api("GET", "/config");
      if (!current()) return;
      if (config.status === 200 && typeof config.data === "string") {
        configLoaded = true;
        if (!$("config-text").value) $("config-text").value = config.data;
      }
    }
    const status = await api("GET", "/status");
    if (!current()) return;
    if (status.status !== 200) throw new Error(`GET /status answered ${status.status}`);
    renderStatus(status.data);
    // The first time, the last hour only (a long journal would take a while).
    const since = lastEvent || new Date(Date.now() - 3600 * 1000).toISOString();
    const fresh = await api("GET", `/events?since=${since}`);
    if (!current()) return;
    if (fresh.status !== 200) throw new Error(`GET /events answered ${fresh.status}`);
    addEvents(fresh.data.events || []);
    ticks += 1;
    // The history when the version in force changes, after an action, and every
    // 10 s (a refused apply changes no version).
    if (status.data.version !== shownVersion || refreshHistory || ticks % 10 === 0) {
      const history = await api("GET", "/config/history");
      if (!current()) return;
      if (history.status !== 200) throw new Error(`GET /config/history answered ${history.status}`);
      shownVersion = status.data.version;
      renderHistory(history.data);
    }
    // A preview is for the version it was judged against.
    if (previewed !== null && status.data.version !== previewedFor) {
      previewed = null;
      $("apply").disabled = true;
      $("apply-result").textContent = `version ${status.data.version} is in force now, not the ${previewedFor} previewed against: preview again`;
    }
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e instanceof Unauthorized) showLogin("the admin API refused the token");
    else $("updated").textContent = `cannot read the admin API: ${e.message}`;
  } finally {
    ticking = false;
  }
}

/** Why a backend is (not) in traffic, from what the status says about it. */
function reason(b) {
  if (b.draining) return "draining";
  if (b.ejected) return "ejected (failing requests)";
  if (b.health === "unhealthy") return "unhealthy (active check)";
  if (b.weight === 0) return "weight 0";
  return b.usable ? "in traffic" : "not usable";
}

function renderStatus(status) {
  $("version").textContent = `version ${status.version} in force`;
  const monitor = status.monitor || { pools: [], alarms: [] };
  $("alarms").replaceChildren(
    ...(monitor.alarms || []).map((a) =>
      el("li", { data: { key: a.key || "" } }, a.message, ` (for ${Math.round(a.seconds)} s)`),
    ),
  );
  const windows = new Map((monitor.pools || []).map((p) => [p.name, p]));
  const limit = status.guard ? status.guard.max_load_ratio : 2;
  $("pools").replaceChildren(
    ...status.pools.map((pool) => {
      const window = windows.get(pool.name);
      const live = new Map(((window && window.backends) || []).map((b) => [b.address, b]));
      const rows = pool.backends.map((b) => {
        const w = live.get(b.address);
        // The window's split once it has traffic; since start before that.
        const windowed = w && window.requests > 0;
        const observed = windowed ? w.observed_share : b.observed_share;
        // The window's capacity share (of the usable backends), which its load ratio uses.
        const capacity = w ? w.capacity_share : b.capacity_share;
        const loadRatio = windowed ? w.load_ratio : null;
        const action = b.draining ? "enable" : "drain";
        return el(
          "tr",
          { class: "backend", data: { pool: pool.name, address: b.address, observed: String(observed), intended: String(b.intended_share) } },
          el("td", {}, b.address),
          el("td", { class: "num" }, b.weight),
          el("td", { class: `health-${b.health}` }, `${b.health === "unknown" ? "not checked" : b.health}: ${reason(b)}`),
          el(
            "td",
            { class: "bars" },
            ...[["intended", b.intended_share], ["observed", observed], ["capacity", capacity]].map(([kind, share]) => {
              const bar = el("div", { class: `bar ${kind}`, title: `${kind} ${percent(share)}` });
              bar.style.width = `${Math.max(0, Math.min(1, share || 0)) * 100}%`;
              return bar;
            }),
          ),
          el("td", { class: "num" }, percent(b.intended_share)),
          el("td", { class: "num observed" }, percent(observed)),
          el("td", { class: "num capacity" }, percent(capacity)),
          el("td", { class: `num${loadRatio !== null && loadRatio > limit ? " over" : ""}` }, loadRatio === null ? "–" : loadRatio.toFixed(2)),
          el("td", { class: "num" }, b.in_flight),
          el("td", { class: "num" }, ms(w && w.p50_ms)),
          el("td", { class: "num" }, ms(w && w.p99_ms)),
          el("td", {}, el("button", { type: "button", class: action, onclick: guard(() => drainOrEnable(pool.name, b.address, action)) }, action === "drain" ? "Drain" : "Enable")),
        );
      });
      const facts = [
        pool.algorithm,
        window ? `${window.usable}/${window.total} usable` : null,
        window && window.skew !== null ? `skew ${window.skew.toFixed(2)}` : "skew –",
        window ? `p50 ${ms(window.p50_ms)}, p99 ${ms(window.p99_ms)}` : null,
        window ? `errors ${percent(window.error_rate)}` : null,
        pool.panic ? "PANIC MODE" : null,
        pool.failed_over ? "FAILED OVER to its backup" : null,
      ].filter(Boolean);
      return el(
        "div",
        { class: "pool", data: { pool: pool.name } },
        el("h3", {}, `pool ${pool.name}`),
        el("div", { class: "facts" }, facts.join(" · ")),
        el("div", { class: "legend" }, ...["intended", "observed", "capacity"].map((k) => el("span", {}, el("i", { class: k }), k))),
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ...["backend", "weight", "health", "share", "intended", "observed", "capacity", "load ratio", "in flight", "p50", "p99", ""].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows),
        ),
      );
    }),
  );
}

async function drainOrEnable(pool, address, action) {
  // The admin API reads the path as written: `:` and IPv6 brackets stay as they are.
  const segment = (x) => encodeURIComponent(x).replace(/%3A/gi, ":").replace(/%5B/gi, "[").replace(/%5D/gi, "]");
  const answer = await api("POST", `/backends/${segment(pool)}/${segment(address)}/${action}`);
  $("updated").textContent =
    answer.status === 200 ? `${action === "drain" ? "draining" : "enabled"} ${address}` : `${action} ${address}: ${answer.data.error || answer.status}`;
  await tick(true);
}

function addEvents(fresh) {
  for (const event of fresh) {
    // Each event once, in order, whatever answers overlap.
    if (event.id <= lastEvent) continue;
    lastEvent = event.id;
    events.push(event);
  }
  if (events.length > 1000) events = events.slice(-1000);
  // The filters offer what the shown journal holds (and keep what is chosen).
  const offer = (select, values) => {
    const chosen = select.value;
    const all = [...new Set(values.filter(Boolean).concat(chosen ? [chosen] : []))].sort();
    const current = [...select.options].slice(1).map((o) => o.value);
    if (all.join("\n") !== current.join("\n")) {
      select.replaceChildren(select.options[0], ...all.map((value) => el("option", { value }, value)));
      select.value = chosen;
    }
  };
  offer($("filter-pool"), events.map((e) => e.data && e.data.pool));
  offer($("filter-kind"), events.map((e) => e.kind));
  renderTimeline();
}

function renderTimeline() {
  const pool = $("filter-pool").value;
  const kind = $("filter-kind").value;
  const shown = events.filter((e) => (!pool || (e.data && e.data.pool === pool)) && (!kind || e.kind === kind));
  $("timeline").replaceChildren(
    ...shown
      .slice()
      .reverse()
      .map((e) => el("li", { data: { kind: e.kind, id: String(e.id) } }, el("time", {}, e.time), el("span", { class: "kind" }, e.kind), e.message)),
  );
}

function renderHistory(history) {
  const versions = (history.versions || []).slice().reverse();
  const applied = (history.versions || []).filter((v) => v.outcome === "applied").map((v) => v.id);
  $("history").tBodies[0].replaceChildren(
    ...versions.map((v) => {
      const previous = applied.filter((id) => id < v.id).pop();
      const origin = v.restores ? `${v.origin} (restores ${v.restores})` : v.origin;
      return el(
        "tr",
        { data: { version: String(v.id), origin: v.origin } },
        el("td", {}, v.id === history.current ? `${v.id} (in force)` : v.id),
        el("td", {}, v.time),
        el("td", {}, origin),
        el("td", {}, v.outcome),
        el("td", {}, (v.detail || "").split("\n")[0]),
        el(
          "td",
          {},
          previous && v.outcome === "applied"
            ? el("button", { type: "button", onclick: guard(() => showDiff(previous, v.id)) }, `diff ${previous} → ${v.id}`)
            : null,
          el("button", { type: "button", onclick: () => showText(v) }, "text"),
        ),
      );
    }),
  );
}

async function showDiff(from, to) {
  const answer = await api("GET", `/config/diff?from=${from}&to=${to}`);
  $("diff").replaceChildren(el("h3", {}, `version ${from} → ${to}`), ...renderPlanOrError(answer));
}

function showText(version) {
  $("diff").replaceChildren(el("h3", {}, `version ${version.id}`), el("pre", {}, version.text));
}

function renderPlanOrError(answer) {
  if (answer.status !== 200) {
    return [el("p", { class: "finding-error" }, answer.data.error || `answered ${answer.status}`), renderFindings(answer.data.findings || [])];
  }
  return renderPlan(answer.data.plan);
}

function renderFindings(findings) {
  return el(
    "ul",
    { class: "findings" },
    ...findings.map((f) =>
      el("li", { class: `finding-${f.severity}` }, `${f.severity}[${f.rule}]`, f.line ? ` line ${f.line}` : "", `: ${f.message}`, f.help ? ` — ${f.help}` : ""),
    ),
  );
}

function renderPlan(plan) {
  if (!plan) return [];
  const parts = [
    el("h4", {}, `Changes (${plan.changes.length})`),
    el("ul", { class: "changes" }, ...(plan.changes.length ? plan.changes.map((c) => el("li", {}, c)) : [el("li", {}, "none")])),
  ];
  for (const pool of plan.pools) {
    parts.push(
      el("h4", {}, `pool ${pool.pool} (${pool.after || `removed, was ${pool.before}`})`),
      el(
        "table",
        { class: "plan" },
        el("thead", {}, el("tr", {}, ...["backend", "weight", "share before", "share after", "load ratio before", "load ratio after", ""].map((h) => el("th", {}, h)))),
        el(
          "tbody",
          {},
          pool.backends.map((b) => {
            const before = b.before || {};
            const after = b.after || {};
            const weight = b.before && b.after && before.weight !== after.weight ? `${before.weight} → ${after.weight}` : (after.weight ?? before.weight);
            const ratio = (x) => (x === null || x === undefined ? "–" : x.toFixed(2));
            return el(
              "tr",
              { data: { address: b.address } },
              el("td", {}, b.address),
              el("td", { class: "num" }, weight),
              el("td", { class: "num" }, percent(before.share)),
              el("td", { class: "num share-after" }, percent(after.share)),
              el("td", { class: "num" }, ratio(before.load_ratio)),
              el("td", { class: "num" }, ratio(after.load_ratio)),
              el("td", { class: "flag" }, b.flags.join("; ")),
            );
          }),
        ),
      ),
    );
    if (pool.keys_moved !== null && pool.keys_moved !== undefined) parts.push(el("p", {}, `keys moving to another backend: ${percent(pool.keys_moved)}`));
  }
  parts.push(el("p", {}, `${plan.flags} flag(s)`));
  return parts;
}

async function preview() {
  const text = $("config-text").value;
  const seq = ++previewSeq;
  previewed = null;
  $("apply").disabled = true;
  $("apply-result").textContent = "";
  let answer;
  try {
    answer = await api("POST", "/config?dry_run=true", text);
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    if (seq === previewSeq) $("preview-result").replaceChildren(el("p", { class: "finding-error" }, `the preview failed: ${e.message}`));
    return;
  }
  // A newer preview, or an edit, since this one was asked for: it judged other text.
  if (seq !== previewSeq) return;
  const data = answer.data;
  if (answer.status !== 200) {
    $("preview-result").replaceChildren(el("p", { class: "finding-error" }, `the preview was refused (${answer.status}): ${data.error || data}`));
    return;
  }
  $("preview-result").replaceChildren(
    el("p", { class: data.would_apply ? "" : "finding-error" }, data.would_apply ? "This config can be applied:" : `This config would be refused${data.reason ? `: ${data.reason}` : ":"}`),
    renderFindings(data.findings || []),
    ...renderPlan(data.plan),
  );
  if (data.would_apply) {
    previewed = text;
    previewedFor = data.in_force;
    $("apply").disabled = false;
  }
}

async function apply() {
  // Only the text previewed, against the version it was previewed against.
  const text = previewed;
  $("apply").disabled = true;
  previewed = null;
  if (text === null) return;
  let answer;
  try {
    answer = await api("POST", "/config", text);
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    $("apply-result").textContent = `the apply failed: ${e.message}`;
    return;
  }
  const data = answer.data;
  $("apply-result").textContent =
    answer.status === 200 ? `${data.result || "applied"}: version ${data.version}` : `refused (${answer.status}): ${data.reason || data.error || "see the findings"}`;
  if (answer.status !== 200 && data.findings) $("apply-result").append(renderFindings(data.findings));
  await tick(true);
}

async function rollback() {
  if (!window.confirm("Roll back to the previous good version of the config?")) return;
  let answer;
  try {
    answer = await api("POST", "/config/rollback");
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    $("rollback-result").textContent = `the rollback failed: ${e.message}`;
    return;
  }
  const data = answer.data;
  $("rollback-result").textContent =
    answer.status === 200 ? `rolled back: version ${data.version} in force` : `not rolled back (${answer.status}): ${data.error || data.reason || ""}`;
  await tick(true);
}

/** `action`, sending the page back to the login form when the token is refused. */
function guard(action) {
  return async () => {
    try {
      await action();
    } catch (e) {
      if (e instanceof Unauthorized) showLogin("the admin API refused the token");
      else $("updated").textContent = `the admin API did not answer: ${e.message}`;
    }
  };
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (opening || timer) return;
  opening = true;
  token = $("token").value.trim();
  $("token").value = "";
  try {
    await api("GET", "/status");
    sessionStorage.setItem(TOKEN_KEY, token);
    await open();
  } catch (e) {
    showLogin(e instanceof Unauthorized ? "the admin API refused this token" : `cannot reach the admin API: ${e.message}`);
  } finally {
    opening = false;
  }
});
$("logout").addEventListener("click", () => showLogin(""));
$("filter-pool").addEventListener("change", renderTimeline);
$("filter-kind").addEventListener("change", renderTimeline);
$("preview").addEventListener("click", guard(preview));
// Only the text previewed can be applied: an edit calls for a new preview.
$("config-text").addEventListener("input", () => {
  previewSeq += 1;
  previewed = null;
  $("apply").disabled = true;
});
$("apply").addEventListener("click", guard(apply));
$("rollback").addEventListener("click", guard(rollback));

if (token) {
  open().catch((e) => (e instanceof Unauthorized ? showLogin("the admin API refused the token") : null));
} else {
  showLogin("");
}
