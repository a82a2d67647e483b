// The dashboard, live: every few seconds this asks /ui/live.json for the overview's
// numbers and puts them into the page in place (each target's state and backlog,
// the throughput counts and chart), and it keeps relative times ("2 min ago")
// current. It changes text and attributes only, never markup from the server, and
// talks to nothing but the page's own origin (the Content-Security-Policy says so).
// The page is whole without it: it then reloads itself instead (<noscript>).
// What the numbers mean, and the chart's geometry, are decided on the server
// (app/api/dashboard.py); the words for a time match app/api/pages.py's when().
(() => {
  "use strict";

  const root = document.querySelector("[data-live]");
  // the server's clock minus this one's, in ms, from the last answer
  let skew = 0;

  function relative(ms, now) {
    const seconds = Math.floor(Math.abs(now - ms) / 1000);
    let amount;
    if (seconds < 120) amount = `${seconds} s`;
    else if (seconds < 7200) amount = `${Math.floor(seconds / 60)} min`;
    else if (seconds < 172800) amount = `${Math.floor(seconds / 3600)} h`;
    else amount = `${Math.floor(seconds / 86400)} days`;
    return ms > now ? `in ${amount}` : `${amount} ago`;
  }

  function refreshTimes() {
    const now = Date.now() + skew;
    for (const time of document.querySelectorAll("time[datetime]")) {
      const at = Date.parse(time.dateTime);
      if (!Number.isNaN(at)) time.textContent = relative(at, now);
    }
  }

  function element(tag, className, text) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (text !== undefined) made.textContent = text;
    return made;
  }

  function moment(iso) {
    const time = element("time");
    time.dateTime = iso;
    time.title = iso;
    time.textContent = relative(Date.parse(iso), Date.now() + skew);
    return time;
  }

  // each cell of a target's row, drawn from that target's numbers
  const cells = {
    status(td, t) {
      td.replaceChildren(element("span", `badge ${t.enabled ? "enabled" : "disabled"}`,
        t.enabled ? "enabled" : "disabled"));
      if (!t.enabled && t.disabled_reason) {
        td.append(element("br"), element("span", "error-text", t.disabled_reason));
      }
    },
    breaker(td, t) {
      td.replaceChildren(element("span", `badge ${t.breaker}`, t.breaker.replace("_", "-")));
      if (t.breaker_reopens_at) {
        const when = element("span", "muted", "probes ");
        when.append(moment(t.breaker_reopens_at));
        td.append(element("br"), when);
      }
    },
    paused(td, t) {
      if (t.paused_until) {
        const until = element("span", "paused");
        until.append(moment(t.paused_until));
        td.replaceChildren(until);
      } else {
        td.replaceChildren(element("span", "muted", "—"));
      }
    },
    limit(td, t) {
      td.replaceChildren(`${t.concurrency_limit} `, element("span", "muted", `/ ${t.max_concurrency}`));
    },
    inflight(td, t) {
      td.textContent = t.inflight;
    },
    // the button that switches the target off, or on again
    switch(td, t) {
      const form = td.querySelector("form");
      const button = td.querySelector("button");
      if (!form || !button) return;
      const to = t.enabled ? "disable" : "enable";
      form.action = `/ui/targets/${encodeURIComponent(t.name)}/${to}`;
      button.className = to;
      button.textContent = t.enabled ? "Disable" : "Enable";
    },
  };
  for (const state of ["scheduled", "queued", "running", "retrying"]) {
    cells[`backlog.${state}`] = (td, t) => { td.textContent = t.backlog[state]; };
  }

  function drawTarget(row, t) {
    for (const td of row.querySelectorAll("td[data-field]")) {
      const draw = cells[td.dataset.field];
      if (draw) draw(td, t);
    }
  }

  function drawThroughput(row, t) {
    for (const [kind, series] of Object.entries(t.throughput)) {
      const td = row.querySelector(`td[data-field="${kind}"]`);
      if (!td) continue;
      td.textContent = series.total;
      td.title = `${series.per_minute.toFixed(1)} per minute`;
    }
    const svg = row.querySelector("svg[data-chart]");
    if (!svg) return;
    const chart = t.chart;
    svg.setAttribute("aria-label", chart.label);
    svg.querySelector("text.top").textContent = `${chart.top}/min`;
    svg.querySelector("polyline.a").setAttribute("points", chart.accepted);
    const succeeded = svg.querySelectorAll("rect.s");
    const failed = svg.querySelectorAll("rect.f");
    const tips = svg.querySelectorAll("rect.slot > title");
    chart.bars.forEach(([sy, sh, fy, fh], i) => {
      succeeded[i]?.setAttribute("y", sy);
      succeeded[i]?.setAttribute("height", sh);
      failed[i]?.setAttribute("y", fy);
      failed[i]?.setAttribute("height", fh);
      if (tips[i]) tips[i].textContent = chart.tips[i];
    });
  }

  function names(selector) {
    return Array.from(document.querySelectorAll(selector), (row) => row.dataset.target);
  }

  function draw(data) {
    const targets = data.targets.map((t) => t.name);
    // a target added or removed: the server draws the new page
    const same = (shown) => shown.length === targets.length && shown.every((n, i) => n === targets[i]);
    if (!same(names("#targets tr[data-target]")) || !same(names("#throughput tr[data-target]"))) {
      window.location.reload();
      return;
    }
    for (const t of data.targets) {
      const selector = `tr[data-target="${CSS.escape(t.name)}"]`;
      drawTarget(document.querySelector(`#targets ${selector}`), t);
      drawThroughput(document.querySelector(`#throughput ${selector}`), t);
    }
    const updated = document.querySelector("#updated time");
    if (updated) {
      updated.dateTime = data.now;
      updated.title = data.now;
    }
    const newest = document.querySelector("#failed tr[data-job]")?.dataset.job ?? "";
    const notice = document.getElementById("new-failed");
    // ids grow with time: a newer failed job than the page's newest
    if (notice && data.newest_failed && data.newest_failed > newest) notice.hidden = false;
  }

  function status(text, lost) {
    const shown = document.getElementById("live-status");
    if (!shown) return;
    shown.textContent = text;
    shown.classList.toggle("lost", lost);
  }

  async function poll() {
    try {
      const response = await fetch(root.dataset.live, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      const type = response.headers.get("content-type") || "";
      if (response.redirected || !type.startsWith("application/json")) {
        // signed out meanwhile: the page goes where the server sends it
        window.location.reload();
        return;
      }
      if (!response.ok) throw new Error(`answered ${response.status}`);
      const data = await response.json();
      skew = Date.parse(data.now) - Date.now();
      draw(data);
      status("live, as of", false);
    } catch (error) {
      status("connection lost, trying again; as of", true);
    }
    refreshTimes();
  }

  if (root) {
    const every = Math.max(1, Number(root.dataset.pollS) || 5) * 1000;
    let timer = null;
    const next = () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        if (!document.hidden) await poll();
        next();
      }, every);
    };
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) poll().then(next);
    });
    status("live, as of", false);
    next();
  }
  setInterval(refreshTimes, 1000);
  refreshTimes();
})();
