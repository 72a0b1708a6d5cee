// Live margin: one websocket per page. Events are notifications; the page re-reads the server's
// fragment (the database is the truth), so a page that reconnects after a gap catches up at once.
(function () {
  "use strict";
  const regions = Array.from(document.querySelectorAll("[data-live]"));
  const watched = new Set();
  regions.forEach((el) => (el.dataset.accounts || "").split(/\s+/).filter(Boolean).forEach((id) => watched.add(Number(id))));
  const status = document.getElementById("live-status");
  const toasts = document.getElementById("toasts");
  // Toasts inform; they never cover the page: they sit in the page's flow above the content, at
  // most MAX_TOASTS at once (the oldest goes), the same text at most once per DEDUP_MS, each
  // dismissable. Severity classes: "bad" (margin calls, liquidations), "warn", "info", "ok" (good
  // news) and "note" (a quiet recovery). role="alert" only for margin calls and liquidations.
  const MAX_TOASTS = 3;
  const DEDUP_MS = 60000;
  const LIFETIME_MS = { bad: 20000, warn: 12000, info: 10000, ok: 8000, note: 6000 };
  const URGENT = new Set(["margin_call.opened", "margin_call.escalated", "liquidation.started", "liquidation.finished"]);
  const who = (e) => e.account_code || "account " + e.account;
  const PRICE = {
    degraded: (s) => `${s} price degraded: fewer fresh sources than required; liquidations paused`,
    stale: (s) => `${s} price stale: no fresh source; margins use the last good price`,
    unconfirmed: (s) => `${s} price move held by the circuit breaker until confirmed`,
  };
  // margin.warning levels: [severity, label, urgent]
  const LEVELS = {
    ok: ["note", "back to ok", false],
    watch: ["info", "watch", false],
    warning: ["warn", "warning", false],
    margin_call: ["bad", "margin call", true],
    liquidation: ["bad", "liquidation", true],
  };
  const NOTICES = {
    "margin_call.opened": ["bad", (e) => `Margin call opened on ${who(e)}`],
    "margin_call.escalated": ["bad", (e) => `Margin call escalated to liquidation on ${who(e)}`],
    "margin_call.cured": ["ok", (e) => `Margin call cured on ${who(e)}`],
    "liquidation.started": ["bad", (e) => `Liquidation started on ${who(e)}`],
    "liquidation.finished": ["warn", (e) => `Liquidation finished on ${who(e)}`],
    "target_band.breached": ["warn", (e) => `Equity / MM ${Number(e.ratio).toFixed(2)}× is ${e.state} your target band`],
    "target_band.restored": ["ok", () => "Back inside your target band"],
    "collateral.auto_transfer": ["info", (e) => `Band policy: ${e.legs.map((l) => `${l.amount} ${l.asset}`).join(", ")} moved ${e.from} → ${e.to}`],
    "hedge.proposed": ["warn", (e) => `Hedge proposed: ${Number(e.quantity) > 0 ? "buy" : "sell"} ${Math.abs(Number(e.quantity))} ${e.instrument}`],
    "hedge.requested": ["warn", (e) => `Hedge requested from your system: ${e.quantity} ${e.instrument}`],
    "hedge.withheld": ["warn", (e) => `Hedge withheld: ${e.reason}`],
    "hedge.undeliverable": ["bad", (e) => `Hedge request ${e.hedge_request} could not be delivered`],
    "hedge.filled": ["ok", (e) => `Hedge ${e.hedge_request} filled`],
  };
  const shown = new Map();  // toast text → when it was last shown (de-duplication)
  const degradedShown = new Set();  // symbols whose degradation this page showed
  let socket = null;
  let retry = 500;
  let pending = null;

  function setState(state) {
    if (status) status.dataset.state = state;
    document.body.dataset.live = state;
  }

  function priceNotice(e) {
    if (e.status === "ok") {
      // A recovery is news only to a page that showed the degradation: a quiet note, once.
      return degradedShown.delete(e.symbol) ? { level: "note", text: `${e.symbol} price back to normal` } : null;
    }
    const text = PRICE[e.status] ? PRICE[e.status](e.symbol) : `${e.symbol} price is ${e.status}`;
    return { level: "warn", text, shown: () => degradedShown.add(e.symbol) };
  }

  function marginWarningNotice(e) {
    if (e.level === e.previous) return null;  // not a change of level
    // An unknown level is shown as a warning, never as good news.
    const [level, label, urgent] = LEVELS[e.level] || ["warn", String(e.level), false];
    let text = `${who(e)}: ${label}`;
    const sigmas = e.distance_sigmas === null ? NaN : Number(e.distance_sigmas);
    if (e.level !== "ok" && Number.isFinite(sigmas)) {
      text += ` — ${sigmas.toFixed(1)} σ from liquidation${e.driver ? " on " + e.driver : ""}`;
    } else if (e.level !== "ok" && e.driver) {
      text += ` — driven by ${e.driver}`;
    }
    return { level, text, urgent };
  }

  function notice(e) {
    if (e.type === "price.status") return priceNotice(e);
    if (e.type === "margin.warning") return marginWarningNotice(e);
    const known = NOTICES[e.type];
    return known ? { level: known[0], text: known[1](e), urgent: URGENT.has(e.type) } : null;
  }

  function toast(n) {
    if (!toasts) return;
    const now = Date.now();
    shown.forEach((at, text) => { if (now - at >= DEDUP_MS) shown.delete(text); });
    if (shown.has(n.text)) return;
    shown.set(n.text, now);
    if (n.shown) n.shown();
    const el = document.createElement("div");
    el.className = "toast " + n.level;
    el.setAttribute("role", n.urgent ? "alert" : "status");
    const text = document.createElement("span");
    text.textContent = n.text;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", () => el.remove());
    el.append(text, close);
    toasts.appendChild(el);
    while (toasts.children.length > MAX_TOASTS) toasts.firstElementChild.remove();
    setTimeout(() => el.remove(), LIFETIME_MS[n.level] || 10000);
  }

  async function refresh() {
    pending = null;
    await Promise.all(regions.map(async (el) => {
      const response = await fetch(el.dataset.live, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
      if (response.ok) {
        el.innerHTML = await response.text();
        tick();
      }
    }));
    document.body.dataset.refreshed = String(Date.now());
  }

  function scheduleRefresh() {
    // Bursts (a sweep emits several events per account) collapse into one re-read.
    if (!pending) pending = setTimeout(refresh, 30);
  }

  function onEvent(event) {
    if (event.type === "hello") {
      // (Re)connected: catch up from the database on whatever happened before we listened.
      scheduleRefresh();
      return;
    }
    if (event.type === "pong") return;
    const n = notice(event);
    if (n) toast(n);
    // A price status change names every account of the member that depends on the symbol.
    const accounts = [event.account, ...(Array.isArray(event.accounts) ? event.accounts : [])];
    if (accounts.some((id) => watched.has(Number(id)))) scheduleRefresh();
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/margin/`);
    socket.onopen = () => { retry = 500; setState("on"); };
    socket.onmessage = (message) => onEvent(JSON.parse(message.data));
    socket.onclose = (close) => {
      setState("off");
      if (close.code === 4401 || close.code === 4403) return;  // signed out: nothing to retry
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    };
  }

  function tick() {
    const now = Date.now();
    document.querySelectorAll("time[data-deadline]").forEach((el) => {
      const left = Math.max(0, Math.round((Date.parse(el.dataset.deadline) - now) / 1000));
      const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      el.textContent = left === 0 ? "deadline passed" : `${h ? h + "h " : ""}${m}m ${String(s).padStart(2, "0")}s left`;
      el.classList.toggle("urgent", left < 300);
    });
  }

  setInterval(tick, 1000);
  setInterval(() => socket && socket.readyState === 1 && socket.send('{"type":"ping"}'), 25000);
  tick();
  connect();
})();
