/*
 * Inspection pages (dashboard/inspection.py): the intruder alerts page (body[data-page="alerts"])
 * and a station page (body[data-page="station"]).
 *
 * Both follow /api/v1/ops/inspection/stream (server-sent events, scoped to the user's stations):
 * `step` (an alert was raised, reviewed or unlocked; the event id is the audit row id, so the
 * browser resumes after it), `result` (a lane's inspection result) and `gate` (a lane's
 * heartbeat). Alert cards are rendered by the server only (/ops/alerts/<id>/card, parsed with
 * DOMParser, which runs no scripts), so the page and the live update show the same card. Review
 * and unlock forms are sent through the JSON API with the CSRF token (ParkGate.api.postJSON);
 * without this script they post as plain forms. Data goes into the DOM as text, never as HTML.
 *
 * Texts come translated from <script type="application/json" id="inspection-i18n">.
 */
/* eslint-env browser */
/* global ParkGate, Chart */
(function () {
  "use strict";

  var TICK_MS = 1000;

  var byId = ParkGate.dom.byId;
  var el = ParkGate.dom.el;
  var validId = ParkGate.util.validId;
  var pad2 = ParkGate.util.pad2;

  /** A page's JSON block (ParkGate.util.readJSON), {} if missing or bad. */
  function readJSON(id) {
    return ParkGate.util.readJSON(id) || {};
  }

  var MESSAGES = readJSON("inspection-i18n");

  function t(key, vars) {
    return ParkGate.util.format(MESSAGES, key, vars);
  }

  function util() {
    return (window.ParkGate && ParkGate.util) || null;
  }

  /** Local "YYYY-MM-DD HH:MM:SS" of an ISO time. */
  function localTime(iso) {
    var ms = util() ? util().parseTs(iso) : Date.parse(iso);
    if (!isFinite(ms)) return "—";
    var d = new Date(ms);
    return (
      d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " +
      pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds())
    );
  }

  // ---- the stream ---------------------------------------------------------------------------

  /**
   * Follow the stream (ParkGate.stream.connect); the browser reconnects by itself (sending
   * Last-Event-ID), and when it gives up, the retry resumes after the last step seen.
   */
  function follow(url, handlers) {
    var lastStep = null;
    var tracked = {};
    Object.keys(handlers).forEach(function (name) {
      tracked[name] = function (data, event) {
        if (event.lastEventId && /^\d+$/.test(event.lastEventId)) lastStep = event.lastEventId;
        handlers[name](data);
      };
    });
    var target = function () {
      return lastStep !== null ? withParam(url, "after", lastStep) : url;
    };
    ParkGate.stream.connect(url && target, tracked, { connectingUntilOpen: true });
  }

  function withParam(url, name, value) {
    var target = new URL(url, window.location.href);
    target.searchParams.set(name, String(value));
    return target.pathname + target.search;
  }

  // ---- alerts page --------------------------------------------------------------------------

  var alerts = {
    init: function () {
      var body = document.body;
      this.list = byId("alert-list");
      if (!this.list) return;
      this.cardsBase = body.getAttribute("data-cards") || "/ops/alerts";
      this.bindForms(document);
      this.showHash();
      var stream = body.getAttribute("data-stream");
      var cursor = body.getAttribute("data-cursor");
      if (stream && cursor) stream = withParam(stream, "after", cursor);
      var self = this;
      follow(stream, {
        step: function (data) {
          self.onStep(data);
        }
      });
    },

    /** Open the card a link pointed at (#alert-12): its history, scrolled into view. */
    showHash: function () {
      var match = /^#alert-(\d+)$/.exec(window.location.hash || "");
      var card = match ? byId("alert-" + match[1]) : null;
      if (!card) return;
      card.classList.add("is-target");
      var history = card.querySelector(".alert-history");
      if (history) history.open = true;
    },

    onStep: function (step) {
      var alert = step && step.alert;
      if (!alert || typeof alert.id !== "number") return;
      var isNew = !byId("alert-" + alert.id);
      var self = this;
      this.fetchCard(alert.id).then(function (card) {
        if (!card) return;
        self.place(card, isNew);
        if (isNew && step.action !== "review" && step.action !== "unlock") {
          self.notice(t("new_alert", { subject: alert.subject, station: alert.station_id }), "ok");
        }
      });
    },

    fetchCard: function (id) {
      var url = this.cardsBase + "/" + encodeURIComponent(String(id)) + "/card";
      return window
        .fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) return null;
          return response.text().then(function (html) {
            var doc = new DOMParser().parseFromString(html, "text/html");
            var card = doc.querySelector("article.alert-card");
            return card ? document.importNode(card, true) : null;
          });
        })
        .catch(function () {
          return null;
        });
    },

    /**
     * Put a card in (a new one on top). A card replaced while the operator works in it keeps
     * what they were doing: open panels, typed text, a ticked box, the focus.
     */
    place: function (card, isNew) {
      var old = byId(card.id);
      if (old) {
        Array.prototype.forEach.call(old.querySelectorAll("details[data-key]"), function (panel) {
          var again = card.querySelector('details[data-key="' + panel.getAttribute("data-key") + '"]');
          if (again && panel.open) again.open = true;
        });
        var focused = old.contains(document.activeElement) ? document.activeElement : null;
        var refocus = null;
        Array.prototype.forEach.call(old.querySelectorAll("form[data-action]"), function (form) {
          var again = card.querySelector('form[data-action="' + form.getAttribute("data-action") + '"]');
          if (!again) return;
          Array.prototype.forEach.call(form.querySelectorAll("textarea, input[type=checkbox]"), function (field) {
            var twin = again.elements[field.name];
            if (!twin) return;
            if (field.type === "checkbox") twin.checked = field.checked;
            else twin.value = field.value;
            if (field === focused) refocus = twin;
          });
        });
        old.parentNode.replaceChild(card, old);
        if (refocus) refocus.focus();
      } else {
        this.list.insertBefore(card, this.list.firstChild);
      }
      if (isNew) card.classList.add("is-new");
      this.bindForms(card);
      this.recount();
    },

    recount: function () {
      var cards = Array.prototype.slice.call(this.list.querySelectorAll(".alert-card"));
      var counts = { lock: 0, warn: 0, flag: 0 };
      cards.forEach(function (card) {
        var kind = card.getAttribute("data-kind");
        if (kind === "lock" && card.getAttribute("data-in-force") === "true") counts.lock += 1;
        else if (kind !== "lock" && card.getAttribute("data-open") === "true" && kind in counts) counts[kind] += 1;
      });
      Object.keys(counts).forEach(function (kind) {
        var node = byId("count-" + kind);
        if (!node) return;
        node.textContent = String(counts[kind]);
        node.classList.toggle(kind === "lock" ? "is-danger" : "is-warn", counts[kind] > 0);
      });
      var empty = byId("alerts-empty");
      if (empty) empty.hidden = cards.length > 0;
    },

    notice: function (text, kind) {
      var node = byId("alerts-notice");
      if (!node) return;
      node.textContent = text;
      node.className = "notice notice-" + (kind === "error" ? "error" : "ok");
      node.hidden = false;
    },

    bindForms: function (root) {
      var self = this;
      Array.prototype.forEach.call(root.querySelectorAll("form.action-form"), function (form) {
        if (form.getAttribute("data-bound")) return;
        form.setAttribute("data-bound", "1");
        form.addEventListener("submit", function (event) {
          event.preventDefault();
          self.submit(form);
        });
      });
    },

    submit: function (form) {
      var self = this;
      var action = form.getAttribute("data-action");
      var url = form.getAttribute("data-api");
      var error = form.querySelector(".form-error");
      var button = form.querySelector("button[type=submit]");
      var body =
        action === "unlock"
          ? { reason: form.elements.reason.value, confirm: form.elements.confirm.checked }
          : { note: form.elements.note.value };
      if (error) error.hidden = true;
      if (button) button.disabled = true;
      ParkGate.api
        .postJSON(url, body)
        .then(function (response) {
          return response
            .json()
            .catch(function () {
              return {};
            })
            .then(function (data) {
              return { ok: response.ok, data: data || {} };
            });
        })
        .then(function (reply) {
          if (button) button.disabled = false;
          if (!reply.ok) {
            var message = reply.data.error && reply.data.error.message ? reply.data.error.message : "?";
            if (error) {
              error.textContent = t("failed", { message: message });
              error.hidden = false;
            }
            return;
          }
          var alert = action === "unlock" ? reply.data.alert : reply.data;
          if (action === "unlock") {
            var key = reply.data.lanes_notified ? "unlocked" : "unlocked_later";
            self.notice(t(key, { subject: alert.subject, station: alert.station_name }), "ok");
          } else {
            self.notice(t("reviewed", { id: alert.id }), "ok");
          }
          self.fetchCard(alert.id).then(function (card) {
            if (card) self.place(card, false);
          });
        })
        .catch(function () {
          if (button) button.disabled = false;
          if (error) {
            error.textContent = t("offline");
            error.hidden = false;
          }
        });
    }
  };

  // ---- station page -------------------------------------------------------------------------

  var station = {
    init: function () {
      var body = document.body;
      this.stationId = body.getAttribute("data-station");
      this.laneLot = body.getAttribute("data-lane-lot");
      this.api = body.getAttribute("data-api");
      this.maxResults = Number(body.getAttribute("data-results-max")) || 30;
      this.bars();
      this.chart();
      this.tick();
      var self = this;
      window.setInterval(function () {
        self.tick();
      }, TICK_MS);
      follow(body.getAttribute("data-stream"), {
        gate: function (data) {
          self.onGate(data);
        },
        result: function (data) {
          self.onResult(data);
        },
        step: function (data) {
          if (data.alert && data.alert.station_id === self.stationId) self.refreshLocks();
        }
      });
    },

    /** Bar widths from data-pct (no style attributes under the CSP). */
    bars: function () {
      Array.prototype.forEach.call(document.querySelectorAll(".rate-fill[data-pct]"), function (node) {
        var pct = Math.max(0, Math.min(100, Number(node.getAttribute("data-pct")) || 0));
        node.style.width = pct + "%";
      });
    },

    chart: function () {
      var canvas = byId("rates-chart");
      var data = readJSON("rates-data");
      if (!canvas || typeof Chart === "undefined" || !data.months || !data.months.length) return;
      var palette = ["#2563eb", "#0891b2", "#7c3aed", "#16a34a", "#d97706", "#db2777", "#475569"];
      var current = this.stationId;
      var datasets = (data.stations || []).map(function (st, i) {
        var colour = palette[i % palette.length];
        return {
          label: st.name + " (" + st.id + ")",
          data: st.rates,
          borderColor: colour,
          backgroundColor: colour,
          borderWidth: st.id === current ? 3 : 1.5,
          spanGaps: true,
          tension: 0.2,
          pointRadius: st.flagged.map(function (f, j) {
            return f ? 7 : st.above[j] ? 5 : 3;
          }),
          pointBackgroundColor: st.flagged.map(function (f, j) {
            return f ? "#dc2626" : st.above[j] ? "#f59e0b" : colour;
          }),
          pointBorderColor: st.flagged.map(function (f) {
            return f ? "#7f1d1d" : colour;
          })
        };
      });
      datasets.push({
        label: t("band_high"),
        data: data.band_high,
        borderColor: "#94a3b8",
        borderDash: [6, 4],
        borderWidth: 1.5,
        pointRadius: 0,
        spanGaps: true,
        fill: false
      });
      datasets.push({
        label: t("median"),
        data: data.median,
        borderColor: "#cbd5e1",
        borderWidth: 1,
        pointRadius: 0,
        spanGaps: true,
        fill: false
      });
      // eslint-disable-next-line no-new
      new Chart(canvas, {
        type: "line",
        data: { labels: data.months, datasets: datasets },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          interaction: { mode: "index", intersect: false },
          plugins: {
            legend: { position: "bottom", labels: { boxWidth: 12 } },
            tooltip: {
              callbacks: {
                label: function (ctx) {
                  return ctx.dataset.label + ": " + (ctx.parsed.y === null ? "—" : ctx.parsed.y + "%");
                }
              }
            }
          },
          scales: {
            y: { title: { display: true, text: t("rate_axis") }, suggestedMin: 50, suggestedMax: 100 }
          }
        }
      });
    },

    onGate: function (gate) {
      if (!validId(gate.gate_id) || gate.lot_id !== this.laneLot) return;
      var row = byId("lane-" + gate.gate_id);
      if (!row) {
        var tpl = byId("lane-template");
        if (!tpl || !tpl.content) return;
        row = tpl.content.querySelector("tr").cloneNode(true);
        row.id = "lane-" + gate.gate_id;
        row.setAttribute("data-gate", gate.gate_id);
        row.querySelector(".lane-id").textContent = gate.gate_id;
        this.insertLane(row, gate.gate_id);
      }
      var online = gate.state === "online";
      row.className = "lane " + (online ? "is-online" : "is-offline");
      row.setAttribute("data-ts", typeof gate.ts === "string" ? gate.ts : "");
      row.querySelector(".lane-state").textContent = t(online ? "online" : "offline");
      var modes = MESSAGES.modes || {};
      var mode = typeof gate.mode === "string" && gate.mode ? gate.mode : null;
      row.querySelector(".lane-mode").textContent = mode ? modes[mode] || mode : "—";
      row.querySelector(".lane-barrier").textContent =
        typeof gate.barrier === "string" && gate.barrier ? gate.barrier : "—";
      var backlog = Number(gate.backlog);
      row.querySelector(".lane-backlog").textContent =
        gate.backlog !== null && gate.backlog !== undefined && isFinite(backlog) ? String(backlog) : "—";
      this.countLanes();
      this.tick();
    },

    insertLane: function (row, gateId) {
      var body = byId("lanes-body");
      var before = null;
      Array.prototype.some.call(body.querySelectorAll("tr.lane"), function (other) {
        if ((other.getAttribute("data-gate") || "").localeCompare(gateId) > 0) {
          before = other;
          return true;
        }
        return false;
      });
      body.insertBefore(row, before);
    },

    countLanes: function () {
      var rows = document.querySelectorAll("#lanes-body tr.lane");
      var online = document.querySelectorAll("#lanes-body tr.lane.is-online").length;
      var total = byId("lanes-total");
      var value = byId("lanes-online");
      if (value && value.firstChild) value.firstChild.nodeValue = String(online);
      if (total) total.textContent = String(rows.length);
      var empty = byId("lanes-empty");
      if (empty) empty.hidden = rows.length > 0;
    },

    /** Heartbeat ages ("12 s ago"), every second. */
    tick: function () {
      var u = util();
      if (!u) return;
      var now = Date.now();
      Array.prototype.forEach.call(document.querySelectorAll("#lanes-body tr.lane"), function (row) {
        var ts = row.getAttribute("data-ts");
        var node = row.querySelector(".lane-age time");
        if (!node) return;
        node.textContent = u.ageText(now - u.parseTs(ts));
        if (ts) node.setAttribute("datetime", ts);
      });
    },

    onResult: function (result) {
      if (result.station_id !== this.stationId || typeof result.id !== "string") return;
      var body = byId("results-body");
      if (!body || body.querySelector('tr[data-result="' + CSS.escape(result.id) + '"]')) return;
      var passed = result.result === "pass";
      var row = el("tr", "result result-" + (passed ? "pass" : "fail") + " is-new");
      row.setAttribute("data-result", result.id);
      var time = el("time", null, localTime(result.ts));
      if (typeof result.ts === "string") time.setAttribute("datetime", result.ts);
      var cell = el("td", "nowrap");
      cell.appendChild(time);
      row.appendChild(cell);
      row.appendChild(el("td", "cell-mono", result.gate_id));
      row.appendChild(el("td", "plate-text", result.plate));
      var tagCell = el("td");
      tagCell.appendChild(el("span", "tag " + (passed ? "tag-ok" : "tag-denied"), t(passed ? "passed" : "failed")));
      row.appendChild(tagCell);
      body.insertBefore(row, body.firstChild);
      while (body.children.length > this.maxResults) body.removeChild(body.lastChild);
      var empty = byId("results-empty");
      if (empty) empty.hidden = true;
    },

    /** After a lock or an unlock at this station: the locked lists again, from the API. */
    refreshLocks: function () {
      var self = this;
      ParkGate.api
        .getJSON(this.api)
        .then(function (data) {
          if (!data) return;
          self.renderChips("locked-plates", data.locked || [], true);
          self.renderChips("locked-persons", data.locked_persons || [], false);
          var count = byId("locked-count");
          var n = (data.locked || []).length + (data.locked_persons || []).length;
          if (count) {
            count.textContent = String(n);
            count.classList.toggle("is-danger", n > 0);
          }
        })
        .catch(function () {});
    },

    renderChips: function (id, items, plate) {
      var list = byId(id);
      if (!list) return;
      while (list.firstChild) list.removeChild(list.firstChild);
      var base = document.querySelector(".locked-foot a");
      var href = base ? base.getAttribute("href") : "";
      items.forEach(function (item) {
        var li = el("li");
        var link = el("a", "chip chip-lock" + (plate ? " plate-text" : ""), item.subject);
        link.setAttribute("href", href + "#alert-" + Number(item.alert_id));
        li.appendChild(link);
        list.appendChild(li);
      });
      var empty = byId(id + "-empty");
      if (empty) empty.hidden = items.length > 0;
    }
  };

  function start() {
    var page = document.body && document.body.getAttribute("data-page");
    if (page === "alerts") alerts.init();
    else if (page === "station") station.init();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
