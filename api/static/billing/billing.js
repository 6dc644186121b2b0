// The finance users' billing page: the account's standing, plan, usage, invoices and
// reconciliation, from /v1/billing. Signing in reuses the softphone's session module.
import { AuthError, Session } from "./auth.js";

const METERS = {
  seat_days: { label: "Seat-days", price: "seat_day_cents" },
  voice_minutes: { label: "Voice minutes", price: "minute_cents" },
  number_months: { label: "Number-months", price: "number_month_cents" },
};
const session = new Session();
const $ = (id) => document.getElementById(id);
let overview = null;
let lastLoad = null;

function say(text) {
  $("message").textContent = text;
}

function money(cents, currency) {
  return new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() })
    .format(cents / 100);
}

function day(iso) {
  return iso ? new Date(iso).toLocaleDateString() : "";
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", body, raw = false } = {}) {
  const token = await session.accessToken();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        accept: raw ? "text/csv" : "application/json",
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError("Can't reach the server. Check your connection.", 0);
  }
  if (!response.ok) {
    let detail = `The server answered ${response.status}.`;
    try {
      const problem = await response.json();
      detail = problem.detail || problem.title || detail;
    } catch {
      // not problem+json
    }
    throw new ApiError(detail, response.status);
  }
  return raw ? response.blob() : response.json();
}

function cells(row, values) {
  for (const value of values) {
    const td = document.createElement("td");
    if (value instanceof Node) td.append(value);
    else td.textContent = String(value);
    row.append(td);
  }
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  for (const values of rows) {
    const tr = document.createElement("tr");
    cells(tr, values);
    body.append(tr);
  }
}

function link(href, text) {
  if (!href) return document.createTextNode("");
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  a.target = "_blank";
  a.rel = "noopener";
  return a;
}

function showStanding(view) {
  $("tenant-status").textContent = view.tenant_status.replace("_", " ");
  $("time-zone").textContent = view.time_zone;
  const banner = $("standing-banner");
  banner.classList.toggle("suspended", view.tenant_status === "suspended");
  if (view.tenant_status === "past_due") {
    banner.textContent = "A payment failed — pay the open invoice to avoid suspension.";
  } else if (view.tenant_status === "suspended") {
    banner.textContent = "Suspended: changes are refused until the open invoice is paid.";
  }
  banner.hidden = !["past_due", "suspended"].includes(view.tenant_status);
  const plan = view.plan;
  $("plan-summary").textContent =
    `${plan.name}: ${money(plan.monthly_cents, plan.currency)} a month, ` +
    `${money(plan.seat_day_cents, plan.currency)} per seat-day, ` +
    `${money(plan.minute_cents, plan.currency)} per minute, ` +
    `${money(plan.number_month_cents, plan.currency)} per number-month` +
    (view.plan_change_pending ? " (change being applied)" : "");
  const select = $("plan-select");
  select.replaceChildren(
    ...view.plans.map((p) => {
      const option = document.createElement("option");
      option.value = p.name;
      option.textContent = `${p.name} — ${money(p.monthly_cents, p.currency)} a month`;
      option.selected = p.name === plan.name;
      return option;
    }),
  );
}

function showUsage(usage) {
  $("period-start").value = usage.start;
  $("period-end").value = usage.end;
  const plan = overview.plan;
  fill(
    "usage-totals",
    Object.entries(METERS).map(([meter, info]) => {
      const quantity = usage.totals[meter] ?? 0;
      const unit = plan[info.price];
      return [info.label, quantity, money(unit, plan.currency), money(quantity * unit, plan.currency)];
    }),
  );
  fill(
    "usage-days",
    usage.days.map((d) => [d.day, METERS[d.meter]?.label ?? d.meter, d.quantity, d.sent]),
  );
}

function showInvoices(list) {
  fill(
    "invoices",
    list.data.map((i) => {
      const links = document.createElement("span");
      links.append(link(i.hosted_invoice_url, "View"), " ", link(i.invoice_pdf, "PDF"));
      return [
        i.number ?? i.id,
        `${day(i.period_start)} – ${day(i.period_end)}`,
        i.status,
        money(i.total, i.currency),
        links,
      ];
    }),
  );
}

function showReconciliation(recon) {
  $("recon-headline").textContent = recon.balanced
    ? "Balanced: Stripe holds exactly what the ledger recorded."
    : "Differences: see the reasons below.";
  fill(
    "reconciliation",
    recon.meters.map((m) => [
      METERS[m.meter]?.label ?? m.meter,
      m.recorded,
      m.sent,
      m.unsent,
      m.at_stripe ?? "—",
      m.difference,
      m.explanation.join(" "),
    ]),
  );
}

function period() {
  const start = $("period-start").value;
  const end = $("period-end").value;
  return start && end ? `?start=${start}&end=${end}` : "";
}

async function load() {
  lastLoad = load;
  $("retry").hidden = true;
  say("Loading…");
  try {
    overview = await api("/v1/billing");
    showStanding(overview);
    const query = period();
    const [usage, invoices, recon] = await Promise.all([
      api(`/v1/billing/usage${query}`),
      api("/v1/billing/invoices").catch((err) => {
        say(err.message);
        return { data: [] };
      }),
      api(`/v1/billing/reconciliation${query}`),
    ]);
    showUsage(usage);
    showInvoices(invoices);
    showReconciliation(recon);
    $("billing").hidden = false;
    say("");
  } catch (err) {
    failed(err);
  }
}

function failed(err) {
  if (err instanceof AuthError && err.status === 401) {
    showLogin("Please sign in again.");
    return;
  }
  if (err.status === 403) {
    $("billing").hidden = true;
    say("Billing is for owners and finance users.");
    return;
  }
  say(err.message);
  $("retry").hidden = false;
}

function showLogin(text = "") {
  $("billing").hidden = true;
  $("sign-out").hidden = true;
  $("login-form").hidden = false;
  say(text);
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await session.login($("login-email").value, $("login-password").value);
  } catch (err) {
    say(err.message);
    return;
  }
  $("login-form").hidden = true;
  $("sign-out").hidden = false;
  await load();
});

$("sign-out").addEventListener("click", async () => {
  await session.logout();
  showLogin("Signed out.");
});

$("retry").addEventListener("click", () => lastLoad?.());

$("period-form").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});

$("plan-change").addEventListener("click", async () => {
  try {
    overview = await api("/v1/billing/plan", {
      method: "PUT",
      body: { plan: $("plan-select").value },
    });
    showStanding(overview);
    say(`The plan is now ${overview.plan.name}.`);
  } catch (err) {
    say(err.message);
  }
});

$("portal").addEventListener("click", async () => {
  try {
    const portal = await api("/v1/billing/portal-session", {
      method: "POST",
      body: { return_url: window.location.href },
    });
    window.location.assign(portal.url);
  } catch (err) {
    say(err.message);
  }
});

$("csv").addEventListener("click", async () => {
  try {
    const blob = await api(`/v1/billing/usage.csv${period()}`, { raw: true });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `usage-${$("period-start").value}-${$("period-end").value}.csv`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  } catch (err) {
    say(err.message);
  }
});

if (session.restore()) {
  $("sign-out").hidden = false;
  load();
} else {
  showLogin();
}
