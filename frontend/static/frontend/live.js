// Live margin: one websocket per page. Events are notifications; the page re-reads the server's
// fragment (the database is the truth), so a page that reconnects after a gap catches up at once.
(function () {
  "use strict";
  const regions = Array.from(document.querySelectorAll("[data-live]"));
  const watched = new Set();
  regions.forEach((el) => (el.dataset.accounts || "").split(/\s+/).filter(Boolean).forEach((id) => watched.add(Number(id))));
  const status = document.getElementById("live-status");
  const toasts = document.getElementById("toasts");
  const NOTICES = {
    "margin_call.opened": ["bad", (e) => `Margin call opened on ${e.account_code || "account " + e.account}`],
    "margin_call.escalated": ["bad", (e) => `Margin call escalated to liquidation on ${e.account_code || "account " + e.account}`],
    "margin_call.cured": ["ok", (e) => `Margin call cured on ${e.account_code || "account " + e.account}`],
    "liquidation.started": ["bad", (e) => `Liquidation started on ${e.account_code || "account " + e.account}`],
    "liquidation.finished": ["warn", (e) => `Liquidation finished on ${e.account_code || "account " + e.account}`],
    "target_band.breached": ["warn", (e) => `Equity / MM ${Number(e.ratio).toFixed(2)}× is ${e.state} your target band`],
    "target_band.restored": ["ok", () => "Back inside your target band"],
    "price.status": ["warn", (e) => `${e.symbol} price is ${e.status}`],
    "collateral.auto_transfer": ["ok", (e) => `Band policy: ${e.legs.map((l) => `${l.amount} ${l.asset}`).join(", ")} moved ${e.from} → ${e.to}`],
    "hedge.proposed": ["warn", (e) => `Hedge proposed: ${Number(e.quantity) > 0 ? "buy" : "sell"} ${Math.abs(Number(e.quantity))} ${e.instrument}`],
    "hedge.requested": ["warn", (e) => `Hedge requested from your system: ${e.quantity} ${e.instrument}`],
    "hedge.withheld": ["warn", (e) => `Hedge withheld: ${e.reason}`],
    "hedge.undeliverable": ["bad", (e) => `Hedge request ${e.hedge_request} could not be delivered`],
    "hedge.filled": ["ok", (e) => `Hedge ${e.hedge_request} filled`],
  };
  let socket = null;
  let retry = 500;
  let pending = null;

  function setState(state) {
    if (status) status.dataset.state = state;
    document.body.dataset.live = state;
  }

  function toast(level, text) {
    if (!toasts) return;
    const el = document.createElement("div");
    el.className = "toast " + level;
    el.setAttribute("role", "alert");
    el.textContent = text;
    toasts.appendChild(el);
    setTimeout(() => el.remove(), 10000);
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
    const notice = NOTICES[event.type];
    if (notice) toast(notice[0], notice[1](event));
    if (watched.has(Number(event.account))) scheduleRefresh();
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
