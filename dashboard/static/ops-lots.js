/*
 * ParkGate operator pages for lots, vehicles and gates (templates/ops/home, lot, live, gates).
 *
 * Each page is rendered complete on the server; this script then follows the operator stream
 * (body[data-stream], /api/v1/ops/stream): server-sent events of the user's own lots only —
 * `lot` (availability), `gate` (heartbeat), `event` (a vehicle), `skipped` (vehicles left out of
 * a busy batch), `end` (the session ended). Nothing is polled, except the lot page's charts,
 * which fetch their series again every five minutes (history is sampled every few minutes).
 *
 * Rows rebuilt here mirror the macros of templates/ops/_lots.html. Every value from the server
 * goes into the DOM through textContent or attributes, never innerHTML (plates and names are
 * data, not markup), and nothing here is inline in a page (Content-Security-Policy).
 *
 * Texts: the page's JSON block #ops-data (texts, warning limits, lot names, chart series), beside
 * parkgate.js's own (#i18n: ages, connection states), both in the page's language.
 */
/* eslint-env browser */
/* global ParkGate, Chart */
var ParkGateOps = (function () {
  "use strict";

  var util = ParkGate.util;
  var dom = ParkGate.dom;
  var byId = dom.byId;
  var el = dom.el;
  var clear = dom.clear;
  var flash = dom.flash;
  var validId = util.validId; // protocol.topics.ID_PATTERN
  var EVENT_ID_RE = /^[0-9A-Za-z_-]{16,40}$/; // protocol.messages.EventId
  var TICK_MS = 1000;
  var LEGACY_LIMIT_S = 120; // a count from a collector that does not say its limit (dashboard/opendata.py)
  var CHART_REFRESH_MS = 5 * 60 * 1000;
  var BARRIER_FAULTS = ["FAULT", "EMERGENCY_OPEN"];
  var PAUSE_KEPT = 200;

  var body = document.body;
  var DATA = util.readJSON("ops-data") || {};
  var TEXTS = DATA.texts || {};
  var LIMITS = DATA.limits || {};
  var NAMES = DATA.names || {};
  var LANG = document.documentElement.lang || "zh-CN";
  var TZ = body.getAttribute("data-tz") || undefined;

  // ---- helpers ------------------------------------------------------------------------------

  /** The page's text for ``key`` with ``{name}`` placeholders filled from ``vars``. */
  function tx(key, vars) {
    return util.format(TEXTS, key, vars);
  }

  function isNum(value) {
    return typeof value === "number" && isFinite(value);
  }

  function fill(pattern, placeholder, value) {
    return String(pattern || "").split(placeholder).join(encodeURIComponent(value));
  }

  function lotUrl(lotId) {
    return fill(body.getAttribute("data-lot-url"), "LOTID", lotId);
  }

  function cropUrl(eventId) {
    return fill(body.getAttribute("data-crop-url"), "EVENTID", eventId);
  }

  // ---- times, in the dashboard's time zone and the page's language ---------------------------

  var formatters = {};

  function parts(ms) {
    var key = "p";
    if (!formatters[key]) {
      var options = {
        year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
        second: "2-digit", hourCycle: "h23"
      };
      try {
        formatters[key] = new Intl.DateTimeFormat("en-GB", Object.assign({ timeZone: TZ }, options));
      } catch (err) {
        formatters[key] = new Intl.DateTimeFormat("en-GB", options); // unknown zone: the browser's
      }
    }
    var out = {};
    formatters[key].formatToParts(new Date(ms)).forEach(function (p) {
      out[p.type] = p.value;
    });
    return out;
  }

  /** "MM-DD HH:MM:SS" (as the server renders it), or a part of it: "HH:MM", "MM-DD HH:00". */
  function timeText(ts, shape) {
    var ms = typeof ts === "number" ? ts : util.parseTs(ts);
    if (!isFinite(ms)) return "—";
    var p = parts(ms);
    if (shape === "hm") return p.hour + ":" + p.minute;
    if (shape === "h") return p.hour + ":00";
    if (shape === "dh") return p.month + "-" + p.day + " " + p.hour + ":00";
    return p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second;
  }

  function ageText(seconds) {
    return isFinite(seconds) ? util.ageText(seconds * 1000) : tx("never");
  }

  // ---- the stream ---------------------------------------------------------------------------

  /** Follow the page's stream (data-stream); when the session ends, reload: the server sends the login page. */
  function connect(handlers) {
    ParkGate.stream.connect(body.getAttribute("data-stream"), handlers, {
      onEnd: function () {
        window.location.reload();
      }
    });
  }

  // ---- a lot's data age (the lot's own limit, as the signs judge it) ---------------------------

  /** Seconds since a gate confirmed the count, from the data-* of ``node``; NaN if never. */
  function lotAge(node, now) {
    var ts = util.parseTs(node.getAttribute("data-ts"));
    if (!isFinite(ts)) return NaN;
    var since = Math.max((now - ts) / 1000, 0);
    if (node.getAttribute("data-legacy") === "true") return since;
    var base = node.getAttribute("data-age0");
    return base === "" || base === null ? NaN : Number(base) + since;
  }

  function lotStale(node, now) {
    var limit = Number(node.getAttribute("data-limit")) || LEGACY_LIMIT_S;
    var age = lotAge(node, now);
    return node.getAttribute("data-stale") === "true" || !isFinite(age) || age > limit;
  }

  function setLotAge(node, lot) {
    node.setAttribute("data-ts", typeof lot.ts === "string" ? lot.ts : "");
    node.setAttribute("data-age0", isNum(lot.data_age_s) ? String(lot.data_age_s) : "");
    var limit = isNum(lot.stale_after_s) ? lot.stale_after_s : LEGACY_LIMIT_S;
    node.setAttribute("data-limit", String(limit));
    node.setAttribute("data-legacy", isNum(lot.stale_after_s) ? "" : "true");
    node.setAttribute("data-stale", lot.stale === true ? "true" : "");
  }

  function occupiedPct(occupied, capacity) {
    if (!(capacity > 0)) return 100;
    return Math.min(100, Math.max(0, Math.round((occupied / capacity) * 100)));
  }

  // ---- gates --------------------------------------------------------------------------------

  /** Same rules as dashboard/lot_data.py gate_warnings, in the same order. */
  function gateWarnings(g, ageS) {
    if (g.state !== "online") return ["offline"];
    var found = [];
    if (ageS > LIMITS.heartbeat_late_s) found.push("heartbeat_late");
    if ((isNum(g.backlog_age_s) ? g.backlog_age_s : 0) > LIMITS.backlog_age_s) found.push("backlog_old");
    if (g.camera === "down") found.push("camera_down");
    if (isNum(g.disk_free_mb) && g.disk_free_mb < LIMITS.disk_low_mb) found.push("disk_low");
    if (isNum(g.cpu_temp_c) && g.cpu_temp_c >= LIMITS.cpu_hot_c) found.push("hot");
    if (typeof g.barrier === "string" && BARRIER_FAULTS.indexOf(g.barrier.toUpperCase()) >= 0) {
      found.push("barrier_fault");
    }
    if (isNum(g.dropped) && g.dropped > 0) found.push("dropped");
    return found;
  }

  /** A heartbeat's value in words (templates/ops/_lots.html does the same); unknown ones as sent. */
  function valueText(kind, value) {
    if (typeof value !== "string" || !value) return "—";
    var key = kind + "." + value;
    return Object.prototype.hasOwnProperty.call(TEXTS, key) ? String(TEXTS[key]) : value;
  }

  function gateAge(g, now) {
    var ts = util.parseTs(g.ts);
    return isFinite(ts) ? Math.max((now - ts) / 1000, 0) : NaN;
  }

  function withSub(node, sub) {
    if (sub) node.appendChild(el("span", "cell-sub", sub));
    return node;
  }

  /** A gate's row (the gate_row macro), from its heartbeat. */
  function renderGateRow(tr, g, showLot, now) {
    var age = gateAge(g, now);
    var warnings = gateWarnings(g, age);
    var online = g.state === "online";
    tr.id = "gate-" + g.gate_id;
    tr.setAttribute("data-gate", g.gate_id);
    tr.setAttribute("data-warn", warnings.join(","));
    tr.className = "gate-row" + (warnings.length ? " has-warn" : "") + (online ? "" : " is-off");
    clear(tr);

    var th = el("th");
    th.setAttribute("scope", "row");
    th.appendChild(el("span", "cell-title mono", g.gate_id));
    if (showLot) {
      var link = el("a", "cell-sub", (NAMES[g.lot_id] || g.lot_id) + " · " + g.lot_id);
      link.href = lotUrl(g.lot_id);
      th.appendChild(link);
    }
    tr.appendChild(th);

    var state = el("td", "nowrap");
    var dot = el("span", "state-dot");
    dot.setAttribute("aria-hidden", "true");
    state.appendChild(dot);
    state.appendChild(el("span", "gate-state-text", tx(online ? "online" : "offline")));
    var hb = el("span", "cell-sub hb", ageText(age));
    hb.setAttribute("data-ts", typeof g.ts === "string" ? g.ts : "");
    state.appendChild(hb);
    tr.appendChild(state);

    tr.appendChild(el("td", "", valueText("mode", g.mode)));
    tr.appendChild(el("td", "", valueText("barrier", g.barrier)));
    var backlog = el("td", "num", isNum(g.backlog) ? String(g.backlog) : "—");
    if (isNum(g.backlog) && g.backlog > 0 && isNum(g.backlog_age_s)) withSub(backlog, Math.round(g.backlog_age_s) + " s");
    tr.appendChild(backlog);
    tr.appendChild(withSub(el("td", "nowrap", valueText("camera", g.camera)), isNum(g.fps) ? g.fps.toFixed(1) + " fps" : ""));
    var read = el("td", "nowrap");
    if (typeof g.last_read_ts === "string" && g.last_read_ts) {
      var time = el("time", "", timeText(g.last_read_ts));
      time.setAttribute("datetime", g.last_read_ts);
      read.appendChild(time);
    } else {
      read.textContent = "—";
    }
    tr.appendChild(read);
    tr.appendChild(el("td", "num", isNum(g.cpu_temp_c) ? Math.round(g.cpu_temp_c) + " °C" : "—"));
    tr.appendChild(
      el("td", "num", isNum(g.disk_free_mb) ? Math.round(g.disk_free_mb).toLocaleString("en-US") + " MB" : "—")
    );
    var warns = el("td", "warns");
    warnings.forEach(function (w) {
      warns.appendChild(el("span", "tag tag-denied warn-" + w, tx("warn." + w)));
      warns.appendChild(document.createTextNode(" "));
    });
    if (!warnings.length) warns.appendChild(el("span", "tag tag-ok", tx("ok")));
    tr.appendChild(warns);
    return warnings;
  }

  /** Gates seen on the stream, kept to re-judge them as their heartbeats age. */
  function GateTable(tbody, showLot, onChange) {
    this.tbody = tbody;
    this.showLot = showLot;
    this.onChange = onChange || function () {};
    this.gates = Object.create(null);
  }

  GateTable.prototype.put = function (g) {
    if (!validId(g.gate_id) || !validId(g.lot_id) || !this.tbody) return;
    this.gates[g.gate_id] = g;
    var row = byId("gate-" + g.gate_id);
    var fresh = !row || row.parentNode !== this.tbody;
    if (fresh) row = el("tr");
    renderGateRow(row, g, this.showLot, Date.now());
    if (fresh) this.tbody.appendChild(row);
    this.onChange();
  };

  /** Ages of the heartbeats; a row whose warnings changed with time is drawn again. */
  GateTable.prototype.tick = function (now) {
    var self = this;
    Object.keys(this.gates).forEach(function (id) {
      var g = self.gates[id];
      var row = byId("gate-" + id);
      if (!row) return;
      var age = gateAge(g, now);
      if (gateWarnings(g, age).join(",") !== row.getAttribute("data-warn")) {
        renderGateRow(row, g, self.showLot, now);
        self.onChange();
        return;
      }
      var hb = row.querySelector(".hb");
      if (hb) hb.textContent = ageText(age);
    });
    if (this.tbody) {
      Array.prototype.forEach.call(this.tbody.querySelectorAll(".hb"), function (hb) {
        var row = hb.closest("tr");
        if (row && !self.gates[row.getAttribute("data-gate")]) {
          var ts = util.parseTs(hb.getAttribute("data-ts"));
          hb.textContent = ageText(isFinite(ts) ? (now - ts) / 1000 : NaN);
        }
      });
    }
  };

  GateTable.prototype.counts = function () {
    var rows = this.tbody ? this.tbody.querySelectorAll("tr.gate-row") : [];
    var out = { total: rows.length, offline: 0, warned: 0 };
    Array.prototype.forEach.call(rows, function (row) {
      if (row.classList.contains("is-off")) out.offline += 1;
      if (row.classList.contains("has-warn")) out.warned += 1;
    });
    return out;
  };

  // ---- vehicles -----------------------------------------------------------------------------

  /** A vehicle's row (the vehicle_row macro). */
  function vehicleRow(e, showLot) {
    var tr = el("tr", "ev ev-" + (e.action === "open" ? "open" : "deny"));
    tr.id = "ev-" + e.id;
    tr.setAttribute("data-lot", e.lot_id);
    var when = el("td", "nowrap");
    var time = el("time", "", timeText(e.ts));
    time.setAttribute("datetime", e.ts);
    when.appendChild(time);
    tr.appendChild(when);
    if (showLot) {
      var lot = el("td");
      var link = el("a", "", NAMES[e.lot_id] || e.lot_id);
      link.href = lotUrl(e.lot_id);
      lot.appendChild(link);
      lot.appendChild(el("span", "cell-sub", e.lot_id));
      tr.appendChild(lot);
    }
    var gate = el("td");
    gate.appendChild(el("span", "mono", e.gate_id));
    tr.appendChild(gate);
    var dir = el("td");
    dir.appendChild(el("span", "tag dir-" + (e.direction === "entry" ? "entry" : "exit"), tx(e.direction === "entry" ? "entry" : "exit")));
    tr.appendChild(dir);
    var plate = el("td");
    if (typeof e.plate === "string" && e.plate) plate.appendChild(el("span", "plate-text", e.plate));
    else plate.appendChild(el("span", "muted", tx("no_plate")));
    tr.appendChild(plate);
    var hasPlate = typeof e.plate === "string" && e.plate && isNum(e.confidence);
    tr.appendChild(el("td", "num", hasPlate ? Math.round(e.confidence * 100) + "%" : "—"));
    var decision = el("td");
    var open = e.action === "open";
    decision.appendChild(el("span", "tag " + (open ? "tag-ok" : "tag-denied"), tx(open ? "open" : "deny")));
    decision.appendChild(document.createTextNode(" "));
    var reasonKey = "reason." + e.reason;
    decision.appendChild(el("span", "cell-sub", Object.prototype.hasOwnProperty.call(TEXTS, reasonKey) ? tx(reasonKey) : String(e.reason || "")));
    tr.appendChild(decision);
    var crop = el("td", "crop");
    if (e.crop === true && EVENT_ID_RE.test(e.id)) {
      var img = el("img");
      img.src = cropUrl(e.id);
      img.alt = tx("crop") + " " + (typeof e.plate === "string" ? e.plate : "");
      img.loading = "lazy";
      img.width = 120;
      img.height = 40;
      crop.appendChild(img);
    } else {
      crop.appendChild(el("span", "muted", "—"));
    }
    tr.appendChild(crop);
    return tr;
  }

  function validEvent(e) {
    return (
      typeof e.id === "string" && EVENT_ID_RE.test(e.id) && validId(e.lot_id) && validId(e.gate_id) &&
      isFinite(util.parseTs(e.ts))
    );
  }

  /** Newest first by event time, at most data-max rows; returns true if it was new. */
  function VehicleList(showLot) {
    this.table = byId("ev-table");
    this.tbody = byId("ev-rows");
    this.showLot = showLot;
    this.max = this.table ? Number(this.table.getAttribute("data-max")) || 100 : 100;
  }

  VehicleList.prototype.add = function (e) {
    if (!this.tbody || !validEvent(e) || byId("ev-" + e.id)) return false;
    var row = vehicleRow(e, this.showLot);
    var ts = util.parseTs(e.ts);
    var before = this.tbody.firstChild;
    while (before) {
      var time = before.querySelector ? before.querySelector("time") : null;
      if (!time || util.parseTs(time.getAttribute("datetime")) <= ts) break;
      before = before.nextSibling;
    }
    this.tbody.insertBefore(row, before);
    flash(row, "flash-up");
    while (this.tbody.children.length > this.max) this.tbody.removeChild(this.tbody.lastElementChild);
    var wrap = byId("ev-wrap");
    var empty = byId("ev-empty");
    if (wrap) wrap.hidden = false;
    if (empty) empty.hidden = true;
    return true;
  };

  // ---- overview (/ops/) ---------------------------------------------------------------------

  var home = {
    init: function () {
      var self = this;
      this.tbody = byId("ops-lot-rows");
      this.gates = Object.create(null); // gate id -> {lot, online}
      this.tick();
      window.setInterval(function () {
        self.tick();
      }, TICK_MS);
      connect({
        lot: function (lot) {
          self.onLot(lot);
        },
        gate: function (gate) {
          self.onGate(gate);
        }
      });
    },

    rows: function () {
      return this.tbody ? Array.prototype.slice.call(this.tbody.querySelectorAll("tr")) : [];
    },

    row: function (lotId) {
      var row = byId("ops-lot-" + lotId);
      if (row || !this.tbody) return row;
      var tpl = byId("ops-lot-row");
      if (!tpl || !tpl.content) return null;
      row = tpl.content.querySelector("tr").cloneNode(true);
      row.id = "ops-lot-" + lotId;
      row.querySelector(".ops-lot-id").textContent = lotId;
      row.querySelector(".ops-lot-name").href = lotUrl(lotId);
      var before = null;
      this.rows().some(function (other) {
        if (other.id.slice(8).localeCompare(lotId) > 0) {
          before = other;
          return true;
        }
        return false;
      });
      this.tbody.insertBefore(row, before);
      byId("ops-lot-wrap").hidden = false;
      byId("ops-empty").hidden = true;
      return row;
    },

    onLot: function (lot) {
      if (!validId(lot.lot_id)) return;
      var row = this.row(lot.lot_id);
      if (!row) return;
      var capacity = Math.max(0, Number(lot.capacity) || 0);
      var free = Math.max(0, Number(lot.free) || 0);
      var occupied = Math.max(0, Number(lot.occupied) || 0);
      var lvl = util.level(free, capacity);
      var pct = occupiedPct(occupied, capacity);
      row.querySelector(".ops-lot-name").textContent = typeof lot.name === "string" ? lot.name : lot.lot_id;
      var count = row.querySelector(".ops-count");
      count.classList.remove("muted");
      var freeNode = row.querySelector(".ops-free");
      var prev = freeNode.textContent;
      freeNode.textContent = String(free);
      freeNode.className = "ops-free lvl-" + lvl;
      row.querySelector(".ops-cap").textContent = String(capacity);
      var bar = row.querySelector(".occ-bar");
      bar.setAttribute("class", "occ-bar lvl-" + lvl);
      bar.querySelector(".occ-fill").setAttribute("width", String(pct));
      var pctNode = row.querySelector(".ops-pct");
      pctNode.textContent = pct + "%";
      pctNode.classList.remove("muted");
      var age = row.querySelector(".ops-age");
      setLotAge(age, lot);
      var tag = row.querySelector(".ops-stale-tag");
      tag.textContent = tx("stale");
      if (prev !== "—" && prev !== String(free)) flash(freeNode, Number(prev) < free ? "flash-up" : "flash-down");
      this.summary();
      this.tick();
    },

    onGate: function (gate) {
      if (!validId(gate.gate_id) || !validId(gate.lot_id)) return;
      this.gates[gate.gate_id] = { lot: gate.lot_id, online: gate.state === "online" };
      var per = Object.create(null);
      var self = this;
      Object.keys(this.gates).forEach(function (id) {
        var g = self.gates[id];
        var n = per[g.lot] || (per[g.lot] = [0, 0]);
        n[1] += 1;
        if (g.online) n[0] += 1;
      });
      var n = per[gate.lot_id];
      var row = byId("ops-lot-" + gate.lot_id);
      if (row && n) {
        var node = row.querySelector(".ops-gates");
        node.textContent = n[0] + " / " + n[1];
        node.classList.toggle("is-warn", n[0] < n[1]);
      }
      this.summary();
    },

    summary: function () {
      var free = 0;
      var capacity = 0;
      var offline = 0;
      var rows = this.rows();
      rows.forEach(function (row) {
        var f = Number(row.querySelector(".ops-free").textContent);
        if (isFinite(f)) {
          free += f;
          capacity += Number(row.querySelector(".ops-cap").textContent) || 0;
        }
        var parts = row.querySelector(".ops-gates").textContent.split("/");
        offline += Math.max((Number(parts[1]) || 0) - (Number(parts[0]) || 0), 0);
      });
      byId("ops-lots").textContent = String(rows.length);
      var total = byId("ops-free");
      total.firstChild.textContent = String(free);
      total.querySelector(".stat-of").textContent = " / " + capacity;
      var off = byId("ops-gates-off");
      off.textContent = String(offline);
      off.classList.toggle("is-warn", offline > 0);
    },

    tick: function () {
      var now = Date.now();
      var stale = 0;
      this.rows().forEach(function (row) {
        var cellNode = row.querySelector(".ops-age");
        var counted = row.querySelector(".ops-free").textContent !== "—";
        var isStale = !counted || lotStale(cellNode, now);
        if (counted) {
          row.querySelector(".ops-age-text").textContent = ageText(lotAge(cellNode, now));
          row.querySelector(".ops-stale-tag").hidden = !isStale;
        }
        row.className = isStale ? "is-stale" : "";
        if (isStale) stale += 1;
      });
      var node = byId("ops-stale");
      if (node) {
        node.textContent = String(stale);
        node.classList.toggle("is-warn", stale > 0);
      }
    }
  };

  // ---- one lot (/ops/lots/<id>) -------------------------------------------------------------

  var CHART_FONT = "system-ui, 'Noto Sans CJK SC', 'WenQuanYi Zen Hei', 'Microsoft YaHei', sans-serif";
  var COLORS = { line: "#2563eb", fill: "rgba(37, 99, 235, 0.12)", entries: "#2563eb", exits: "#d97706", refused: "#dc2626" };

  /** A week's axis: one tick per day ("MM-DD" at local midnight), the hours left to the tooltip. */
  function dayTicks() {
    return {
      autoSkip: false,
      maxRotation: 0,
      callback: function (value, index) {
        var b = this.chart.$buckets && this.chart.$buckets[index];
        if (!b) return null;
        var p = parts(util.parseTs(b.ts));
        return p.hour === "00" ? p.month + "-" + p.day : null;
      }
    };
  }

  var lotPage = {
    init: function () {
      var self = this;
      this.lotId = body.getAttribute("data-lot");
      this.series = DATA.series || {};
      this.charts = {};
      this.gates = new GateTable(byId("gate-rows"), false, function () {
        byId("gates-wrap").hidden = false;
        byId("gates-empty").hidden = true;
      });
      this.vehicles = new VehicleList(false);
      this.drawCharts();
      this.tick();
      window.setInterval(function () {
        self.tick();
      }, TICK_MS);
      window.setInterval(function () {
        self.refresh();
      }, CHART_REFRESH_MS);
      connect({
        lot: function (lot) {
          self.onLot(lot);
        },
        gate: function (gate) {
          self.gates.put(gate);
        },
        event: function (e) {
          self.onEvent(e);
        }
      });
    },

    onLot: function (lot) {
      if (lot.lot_id !== this.lotId) return;
      var free = byId("lot-free");
      var prev = free.textContent;
      free.textContent = String(lot.free);
      byId("lot-occupied").textContent = String(lot.occupied);
      byId("lot-capacity").textContent = String(lot.capacity);
      if (typeof lot.name === "string") byId("lot-name").textContent = lot.name;
      setLotAge(byId("lot-age"), lot);
      byId("lot-stale").textContent = tx("stale");
      if (prev !== "—" && prev !== String(lot.free)) flash(free, Number(prev) < lot.free ? "flash-up" : "flash-down");
      this.tick();
    },

    onEvent: function (e) {
      if (e.lot_id !== this.lotId || !this.vehicles.add(e)) return;
      this.countFlow(e);
    },

    /** A new vehicle counts in the current hour's bar at once (the next refresh recounts). */
    countFlow: function (e) {
      var hours = this.series.flows;
      var chart = this.charts.flows;
      if (!hours || !hours.length) return;
      var hour = Math.floor(util.parseTs(e.ts) / 3600000) * 3600000;
      var last = util.parseTs(hours[hours.length - 1].hour);
      while (hour > last) {
        last += 3600000;
        hours.push({ hour: new Date(last).toISOString(), entries: 0, exits: 0, refused: 0 });
        hours.shift();
      }
      var bucket = null;
      hours.forEach(function (h) {
        if (util.parseTs(h.hour) === hour) bucket = h;
      });
      if (!bucket) return;
      if (e.action !== "open") bucket.refused += 1;
      else if (e.direction === "entry") bucket.entries += 1;
      else bucket.exits += 1;
      if (chart) this.fillFlows(chart);
    },

    tick: function () {
      var now = Date.now();
      var age = byId("lot-age");
      if (age && age.getAttribute("data-ts")) {
        var stale = lotStale(age, now);
        age.textContent = ageText(lotAge(age, now));
        age.classList.toggle("is-warn", stale);
        byId("lot-stale").hidden = !stale;
      }
      this.gates.tick(now);
    },

    drawCharts: function () {
      if (typeof Chart === "undefined") return;
      Chart.defaults.font.family = CHART_FONT;
      Chart.defaults.color = "#4b5563";
      this.charts.day = this.lineChart("chart-day", this.series.occupancy_24h, "hm");
      this.charts.week = this.lineChart("chart-week", this.series.occupancy_7d, "dh");
      this.charts.flows = this.barChart("chart-flows");
    },

    lineChart: function (id, buckets, shape) {
      var canvas = byId(id);
      if (!canvas) return null;
      var chart = new Chart(canvas, {
        type: "line",
        data: { labels: [], datasets: [{ label: tx("occupancy"), data: [], borderColor: COLORS.line, backgroundColor: COLORS.fill, fill: "origin", borderWidth: 2, pointRadius: 0, pointHitRadius: 6, tension: 0.25, spanGaps: false }] },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          interaction: { mode: "index", intersect: false },
          scales: {
            y: { min: 0, max: 100, ticks: { callback: function (v) { return v + "%"; } } },
            x: { ticks: shape === "dh" ? dayTicks() : { autoSkip: true, autoSkipPadding: 14, maxTicksLimit: 8, maxRotation: 0 }, grid: { display: false } }
          },
          plugins: {
            legend: { display: false },
            tooltip: {
              callbacks: {
                label: function (ctx) {
                  var b = chart.$buckets[ctx.dataIndex];
                  if (!b || b.pct === null) return "";
                  return Math.round(b.pct) + "% · " + tx("occupied") + " " + Math.round(b.occupied) + " · " + tx("free") + " " + Math.round(b.free);
                }
              }
            }
          }
        }
      });
      chart.$shape = shape;
      chart.$empty = id + "-empty";
      this.fillLine(chart, buckets || []);
      return chart;
    },

    fillLine: function (chart, buckets) {
      chart.$buckets = buckets;
      chart.data.labels = buckets.map(function (b) { return timeText(b.ts, chart.$shape); });
      chart.data.datasets[0].data = buckets.map(function (b) { return b.pct; });
      chart.update("none");
      var empty = byId(chart.$empty);
      var none = !buckets.some(function (b) { return b.pct !== null; });
      if (empty) empty.hidden = !none;
      chart.canvas.parentNode.classList.toggle("is-empty", none);
    },

    barChart: function (id) {
      var canvas = byId(id);
      if (!canvas) return null;
      var chart = new Chart(canvas, {
        type: "bar",
        data: {
          labels: [],
          datasets: [
            { label: tx("entries"), data: [], backgroundColor: COLORS.entries, borderRadius: 3 },
            { label: tx("exits"), data: [], backgroundColor: COLORS.exits, borderRadius: 3 },
            { label: tx("refused"), data: [], backgroundColor: COLORS.refused, borderRadius: 3 }
          ]
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          interaction: { mode: "index", intersect: false },
          scales: {
            y: { beginAtZero: true, ticks: { precision: 0 } },
            x: { ticks: { autoSkip: true, autoSkipPadding: 14, maxTicksLimit: 12, maxRotation: 0 }, grid: { display: false } }
          },
          plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } }
        }
      });
      this.fillFlows(chart);
      return chart;
    },

    fillFlows: function (chart) {
      var hours = this.series.flows || [];
      chart.data.labels = hours.map(function (h) { return timeText(h.hour, "h"); });
      chart.data.datasets[0].data = hours.map(function (h) { return h.entries; });
      chart.data.datasets[1].data = hours.map(function (h) { return h.exits; });
      chart.data.datasets[2].data = hours.map(function (h) { return h.refused; });
      chart.update("none");
    },

    /** The charts' series again from the JSON API (history is sampled every few minutes). */
    refresh: function () {
      var self = this;
      var api = DATA.api || {};
      function get(url, use) {
        if (!url) return;
        ParkGate.api.getJSON(url)
          .then(function (data) { if (data) use(data); })
          .catch(function () {});
      }
      get(api.day, function (d) { if (self.charts.day) self.fillLine(self.charts.day, d.buckets || []); });
      get(api.week, function (d) { if (self.charts.week) self.fillLine(self.charts.week, d.buckets || []); });
      get(api.flows, function (d) {
        self.series.flows = d.hours || [];
        if (self.charts.flows) self.fillFlows(self.charts.flows);
      });
    }
  };

  // ---- live vehicles (/ops/live) ------------------------------------------------------------

  var live = {
    init: function () {
      var self = this;
      this.list = new VehicleList(true);
      this.paused = false;
      this.held = [];
      this.note = byId("live-note");
      this.button = byId("live-pause");
      if (this.button) {
        this.button.addEventListener("click", function () {
          self.toggle();
        });
      }
      connect({
        event: function (e) {
          self.onEvent(e);
        },
        skipped: function (data) {
          self.say(tx("skipped", { n: Number(data.count) || 0 }));
        }
      });
    },

    onEvent: function (e) {
      if (!this.paused) {
        this.list.add(e);
        return;
      }
      this.held.push(e);
      if (this.held.length > PAUSE_KEPT) this.held.shift();
      this.say(tx("paused", { n: this.held.length }));
    },

    toggle: function () {
      this.paused = !this.paused;
      this.button.setAttribute("aria-pressed", this.paused ? "true" : "false");
      this.button.textContent = tx(this.paused ? "resume" : "pause");
      if (this.paused) {
        this.say(tx("paused", { n: 0 }));
        return;
      }
      var self = this;
      this.held.forEach(function (e) {
        self.list.add(e);
      });
      this.held = [];
      this.say("");
    },

    say: function (text) {
      if (!this.note) return;
      this.note.textContent = text;
      this.note.hidden = !text;
    }
  };

  // ---- gate health (/ops/gates) -------------------------------------------------------------

  var gatesPage = {
    init: function () {
      var self = this;
      this.table = new GateTable(byId("gate-rows"), true, function () {
        self.summary();
      });
      window.setInterval(function () {
        self.table.tick(Date.now());
      }, TICK_MS);
      connect({
        gate: function (gate) {
          self.table.put(gate);
        }
      });
    },

    summary: function () {
      var n = this.table.counts();
      byId("gates-wrap").hidden = n.total === 0;
      byId("gates-empty").hidden = n.total > 0;
      byId("gates-total").textContent = String(n.total);
      [["gates-offline", n.offline], ["gates-warned", n.warned]].forEach(function (pair) {
        var node = byId(pair[0]);
        node.textContent = String(pair[1]);
        node.classList.toggle("is-warn", pair[1] > 0);
      });
    }
  };

  // ---- start --------------------------------------------------------------------------------

  var PAGES = { "ops-home": home, "ops-lot": lotPage, "ops-live": live, "ops-gates": gatesPage };

  function start() {
    var page = PAGES[body.getAttribute("data-page")];
    if (page) page.init();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();

  return { pages: PAGES, gateWarnings: gateWarnings, timeText: timeText };
})();
