/*
 * ParkGate dashboard: live updates over server-sent events (EventSource).
 *
 * Events (JSON data): `lot` (one lot's availability), `gate` (a gate node online/offline),
 * `screen` (content of one guidance screen). The overview page (body[data-page="index"])
 * updates lot cards and the summary; the sign page (body[data-page="screen"]) re-renders its
 * rows. All data goes into the DOM through textContent / attributes, never innerHTML, and
 * nothing here is inline in a page (Content-Security-Policy: scripts from this server only).
 *
 * Texts come translated from the page: <script type="application/json" id="i18n"> (dashboard/i18n.py,
 * the page's language). The guidance sign has no such block and keeps its bilingual texts.
 *
 * The only global is the ParkGate object.
 */
/* eslint-env browser */
var ParkGate = (function () {
  "use strict";

  var STALE_MS = 120 * 1000;
  var TICK_MS = 1000;
  var RETRY_MIN_MS = 2000;
  var RETRY_MAX_MS = 30000;
  var ARROWS = { left: "\u2190", right: "\u2192", up: "\u2191", down: "\u2193" };
  var SIGN_STATES = ["ok", "full", "closed", "blank", "stale"]; // protocol.messages.ScreenState
  var STALE_TEXT = "--"; // what a sign row shows when the page itself finds its data too old
  var CONN_TEXT = {
    connecting: ["连接中", "connecting"],
    live: ["实时", "live"],
    reconnecting: ["重连中", "reconnecting"]
  };

  // ---- texts --------------------------------------------------------------------------------

  /** The object in a page's <script type="application/json" id="..."> block; null if missing or bad. */
  function readJSON(id) {
    var node = document.getElementById(id);
    if (!node) return null;
    try {
      var data = JSON.parse(node.textContent || "null");
      return data && typeof data === "object" ? data : null;
    } catch (err) {
      if (window.console) console.warn("ParkGate: bad page data", id, err);
      return null;
    }
  }

  var MESSAGES = readJSON("i18n") || {};

  /**
   * ``messages[key]`` (else ``fallback``, else the key itself) with ``{name}`` placeholders filled
   * from ``vars``. Each script's own text block goes through this (ops-data, inspection-i18n, ...).
   */
  function format(messages, key, vars, fallback) {
    var has = Object.prototype.hasOwnProperty.call(messages, key);
    var text = has ? String(messages[key]) : fallback !== undefined ? fallback : key;
    Object.keys(vars || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(vars[name]));
    });
    return text;
  }

  /** The page's text for ``key`` with ``{name}`` placeholders filled from ``vars``. */
  function t(key, vars, fallback) {
    return format(MESSAGES, key, vars, fallback);
  }

  // ---- small helpers ------------------------------------------------------------------------

  function byId(id) {
    return document.getElementById(id);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function setNodeText(node, text) {
    if (node) node.textContent = text;
  }

  function toInt(value) {
    var n = Number(value);
    return isFinite(n) ? Math.max(0, Math.round(n)) : 0;
  }

  /** Milliseconds since epoch for an ISO 8601 string (also "YYYY-MM-DD HH:MM:SS.ffffff+00:00"). */
  function parseTs(value) {
    if (typeof value !== "string" || !value) return NaN;
    var s = value.trim().replace(" ", "T").replace(/(\.\d{3})\d+/, "$1");
    return Date.parse(s);
  }

  function ageParts(ms) {
    if (!isFinite(ms)) return ["—", ""];
    var s = Math.floor(ms / 1000);
    if (s < 1) return ["刚刚", "just now"];
    if (s < 60) return [s + " 秒前", s + " s ago"];
    var m = Math.floor(s / 60);
    if (m < 60) return [m + " 分钟前", m + " min ago"];
    var h = Math.floor(m / 60);
    if (h < 48) return [h + " 小时前", h + " h ago"];
    var d = Math.floor(h / 24);
    return [d + " 天前", d + " d ago"];
  }

  /** An age in the page's language: "just now", "5 s ago", ... */
  function ageText(ms) {
    if (!isFinite(ms)) return "—";
    var s = Math.floor(ms / 1000);
    if (s < 1) return t("age.now");
    if (s < 60) return t("age.s", { n: s });
    var m = Math.floor(s / 60);
    if (m < 60) return t("age.min", { n: m });
    var h = Math.floor(m / 60);
    if (h < 48) return t("age.h", { n: h });
    return t("age.d", { n: Math.floor(h / 24) });
  }

  function isStale(ts, now) {
    var t = parseTs(ts);
    return !isFinite(t) || now - t > STALE_MS;
  }

  function pad2(n) {
    return (n < 10 ? "0" : "") + n;
  }

  /** Local "HH:MM", or "MM-DD HH:MM" when not today. */
  function shortTime(ts) {
    var t = parseTs(ts);
    if (!isFinite(t)) return "—";
    var d = new Date(t);
    var hm = pad2(d.getHours()) + ":" + pad2(d.getMinutes());
    var today = new Date();
    if (d.toDateString() === today.toDateString()) return hm;
    return pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " + hm;
  }

  /** ok (> 30 % free), mid (10–30 %), low (< 10 %), full (nothing free). */
  function level(free, capacity) {
    if (free <= 0 || capacity <= 0) return "full";
    var ratio = free / capacity;
    if (ratio < 0.1) return "low";
    if (ratio <= 0.3) return "mid";
    return "ok";
  }

  function occupiedPct(occupied, capacity) {
    if (capacity <= 0) return 100;
    return Math.min(100, Math.max(0, Math.round((occupied / capacity) * 100)));
  }

  /** Restart a short CSS animation class on a node. */
  function flash(node, className) {
    if (!node) return;
    node.classList.remove("flash-up", "flash-down");
    void node.offsetWidth; // reflow, so the animation starts again
    node.classList.add(className);
    node.addEventListener(
      "animationend",
      function () {
        node.classList.remove(className);
      },
      { once: true }
    );
  }

  function parseData(event) {
    try {
      var data = JSON.parse(event.data);
      return data && typeof data === "object" ? data : null;
    } catch (err) {
      if (window.console) console.warn("ParkGate: bad event data", event.type, err);
      return null;
    }
  }

  /** Same rule as protocol.topics.ID_PATTERN; ids end up in element ids. */
  var ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

  function validId(value) {
    return typeof value === "string" && ID_RE.test(value);
  }

  function arrowName(value) {
    return Object.prototype.hasOwnProperty.call(ARROWS, value) ? value : "none";
  }

  // ---- operator API -------------------------------------------------------------------------

  /**
   * POST JSON to the operator API (/api/v1/ops/...) with the page's CSRF token (<meta
   * name="csrf-token">, only on pages of a logged-in operator): the server refuses a POST
   * without it (400). Returns fetch's Promise of the Response.
   */
  function postJSON(url, body) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return window.fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": meta ? meta.content : "" },
      body: JSON.stringify(body)
    });
  }

  /** GET JSON from this server with the session cookie: a Promise of the data, null unless 2xx. */
  function getJSON(url) {
    return window
      .fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      });
  }

  // ---- connection ---------------------------------------------------------------------------

  function setConnState(state) {
    var node = byId("conn");
    if (!node) return;
    node.setAttribute("data-state", state);
    var pair = CONN_TEXT[state] || CONN_TEXT.connecting;
    var text = t("conn." + state, null, pair[0] + " " + pair[1]);
    setNodeText(node.querySelector(".conn-label"), text);
    node.title = text;
  }

  /**
   * Follow a server-sent event stream and keep it open (every live page: overview, sign, the
   * operator pages of ops-lots.js and inspection.js). The browser retries by itself while the
   * stream is CONNECTING; if it gives up (CLOSED, e.g. the server answered with an error), retry
   * here with a growing delay. The state shows in #conn.
   *
   * ``handlers`` maps event names to functions of (data, event), data being the event's JSON
   * object (an event without one is dropped). ``url`` may be a function, asked before each
   * attempt (to resume after the last event seen). Options: ``onEnd``, called after the stream
   * is closed on an `end` event (the session ended); ``connectingUntilOpen``, show "connecting"
   * rather than "reconnecting" on retries until a connection has opened.
   */
  function connect(url, handlers, options) {
    var opts = options || {};
    var delay = RETRY_MIN_MS;
    var source = null;
    var opened = false;

    function open() {
      var again = opts.connectingUntilOpen ? opened : source !== null;
      setConnState(again ? "reconnecting" : "connecting");
      source = new EventSource(typeof url === "function" ? url() : url);
      source.onopen = function () {
        delay = RETRY_MIN_MS;
        opened = true;
        setConnState("live");
      };
      source.onerror = function () {
        setConnState("reconnecting");
        if (source.readyState === EventSource.CLOSED) {
          source.close();
          window.setTimeout(open, delay);
          delay = Math.min(delay * 2, RETRY_MAX_MS);
        }
      };
      if (opts.onEnd) {
        source.addEventListener("end", function () {
          source.close();
          opts.onEnd();
        });
      }
      Object.keys(handlers).forEach(function (name) {
        source.addEventListener(name, function (event) {
          var data = parseData(event);
          if (data) handlers[name](data, event);
        });
      });
    }

    if (!url || typeof EventSource === "undefined") {
      setConnState("reconnecting");
      return;
    }
    open();
  }

  // ---- overview page ------------------------------------------------------------------------

  var overview = {
    pendingGates: Object.create(null), // gate events for lots without a card yet, keyed by lot id

    init: function () {
      var self = this;
      this.list = byId("lots");
      this.cards().forEach(function (card) {
        self.fillTimes(card);
        var fill = card.querySelector(".bar-fill");
        if (fill) fill.style.width = toInt(fill.getAttribute("data-pct")) + "%";
      });
      this.tick();
      window.setInterval(function () {
        self.tick();
      }, TICK_MS);
      connect(document.body.getAttribute("data-stream"), {
        lot: function (data) {
          self.onLot(data);
        },
        gate: function (data) {
          self.onGate(data);
        }
      });
    },

    cards: function () {
      return this.list ? Array.prototype.slice.call(this.list.querySelectorAll(".lot")) : [];
    },

    onLot: function (lot) {
      if (!validId(lot.lot_id) || !this.list) return;
      var card = byId("lot-" + lot.lot_id) || this.createCard(lot.lot_id);
      if (!card) return;
      this.updateCard(card, lot);
      this.updateSummary();
      this.tick();
    },

    createCard: function (lotId) {
      var tpl = byId("lot-template");
      if (!tpl || !tpl.content) return null;
      var card = tpl.content.querySelector(".lot").cloneNode(true);
      card.id = "lot-" + lotId;
      card.setAttribute("data-lot", lotId);
      card.querySelector(".free").setAttribute("data-lot", lotId);
      card.querySelector(".lot-id").textContent = lotId;
      card.setAttribute("data-free", ""); // no previous value: no flash on the first update
      this.insertSorted(card, lotId);
      var empty = byId("lots-empty");
      if (empty) empty.hidden = true;
      var pending = this.pendingGates[lotId];
      if (pending) {
        delete this.pendingGates[lotId];
        Object.keys(pending).forEach(function (gateId) {
          overview.renderGate(card, pending[gateId]);
        });
      }
      return card;
    },

    insertSorted: function (card, lotId) {
      var before = null;
      this.cards().some(function (other) {
        if ((other.getAttribute("data-lot") || "").localeCompare(lotId) > 0) {
          before = other;
          return true;
        }
        return false;
      });
      this.list.insertBefore(card, before);
    },

    updateCard: function (card, lot) {
      var capacity = toInt(lot.capacity);
      var occupied = toInt(lot.occupied);
      var free = toInt(lot.free);
      var prevAttr = card.getAttribute("data-free");
      var prev = prevAttr === "" || prevAttr === null ? null : toInt(prevAttr);
      var lvl = level(free, capacity);
      var pct = occupiedPct(occupied, capacity);

      card.setAttribute("data-free", String(free));
      card.setAttribute("data-capacity", String(capacity));
      card.setAttribute("data-occupied", String(occupied));
      card.setAttribute("data-ts", typeof lot.ts === "string" ? lot.ts : "");
      card.setAttribute("data-stale", lot.stale === true ? "true" : ""); // the collector: no gate heard
      card.setAttribute("data-last-event", typeof lot.last_event_ts === "string" ? lot.last_event_ts : "");
      card.className = card.className.replace(/\blvl-\w+/g, "").trim() + " lvl-" + lvl;

      card.querySelector(".lot-name").textContent = typeof lot.name === "string" ? lot.name : lot.lot_id;
      var freeNode = card.querySelector(".free");
      freeNode.textContent = String(free);
      card.querySelector(".capacity").textContent = String(capacity);
      card.querySelector(".occupied").textContent = String(occupied);
      card.querySelector(".pct").textContent = pct + "%";
      var fill = card.querySelector(".bar-fill");
      fill.setAttribute("data-pct", String(pct));
      fill.style.width = pct + "%";
      card.querySelector(".bar").setAttribute("aria-valuenow", String(pct));
      setNodeText(card.querySelector(".status"), t("status." + lvl));
      this.fillTimes(card);

      if (prev !== null && prev !== free) flash(freeNode, free > prev ? "flash-up" : "flash-down");
    },

    fillTimes: function (card) {
      var node = card.querySelector(".last-event");
      if (!node) return;
      var ts = card.getAttribute("data-last-event");
      node.textContent = shortTime(ts);
      if (ts) node.setAttribute("datetime", ts);
      else node.removeAttribute("datetime");
    },

    onGate: function (gate) {
      if (!validId(gate.gate_id) || !validId(gate.lot_id)) return;
      var card = byId("lot-" + gate.lot_id);
      if (card) {
        this.renderGate(card, gate);
        return;
      }
      var pending = this.pendingGates[gate.lot_id] || (this.pendingGates[gate.lot_id] = {});
      pending[gate.gate_id] = gate;
    },

    renderGate: function (card, gate) {
      var list = card.querySelector(".gates");
      if (!list) return;
      var item = byId("gate-" + gate.gate_id);
      if (item && item.parentNode !== list) {
        item.parentNode.removeChild(item); // the gate moved to another lot
        item = null;
      }
      if (!item) {
        item = el("li", "gate");
        item.id = "gate-" + gate.gate_id;
        item.appendChild(el("span", "gate-dot"));
        item.appendChild(el("span", "gate-id", gate.gate_id));
        item.appendChild(el("span", "gate-state"));
        item.appendChild(el("span", "gate-backlog"));
        list.appendChild(item);
      }
      var online = gate.state === "online";
      item.className = "gate " + (online ? "is-online" : "is-offline");
      var stateText = t(online ? "gate.online" : "gate.offline");
      setNodeText(item.querySelector(".gate-state"), stateText);
      var backlog = toInt(gate.backlog);
      var backlogText = backlog > 0 ? t("gate.backlog", { n: backlog }) : "";
      item.querySelector(".gate-backlog").textContent = backlogText;
      var title = gate.gate_id + " " + stateText;
      if (typeof gate.barrier === "string" && gate.barrier) {
        title += " · " + t("gate.barrier", { state: gate.barrier });
      }
      if (backlogText) title += " · " + backlogText;
      if (typeof gate.ts === "string") title += " · " + shortTime(gate.ts);
      item.title = title;
    },

    updateSummary: function () {
      var free = 0;
      var capacity = 0;
      var cards = this.cards();
      cards.forEach(function (card) {
        free += toInt(card.getAttribute("data-free"));
        capacity += toInt(card.getAttribute("data-capacity"));
      });
      setText("sum-lots", cards.length);
      setText("sum-free", free);
      setText("sum-capacity", capacity);
    },

    tick: function () {
      var now = Date.now();
      this.cards().forEach(function (card) {
        var ts = card.getAttribute("data-ts");
        setNodeText(card.querySelector(".age"), ageText(now - parseTs(ts)));
        card.classList.toggle("stale", isStale(ts, now) || card.getAttribute("data-stale") === "true");
      });
    }
  };

  function setText(id, value) {
    var node = byId(id);
    if (node) node.textContent = String(value);
  }

  // ---- guidance sign page -------------------------------------------------------------------

  var sign = {
    init: function () {
      var self = this;
      this.root = byId("sign");
      if (!this.root) return;
      this.screenId = document.body.getAttribute("data-screen") || this.idFromPath();
      var list = byId("sign-rows");
      if (list) list.style.setProperty("--rows", String(Math.max(toInt(list.getAttribute("data-rows")), 1)));
      this.tick();
      window.setInterval(function () {
        self.tick();
      }, TICK_MS);
      connect(document.body.getAttribute("data-stream"), {
        screen: function (data) {
          self.onScreen(data);
        }
      });
    },

    /** Fallback when the page was rendered before any content existed: /screens/<id>. */
    idFromPath: function () {
      var parts = window.location.pathname.split("/").filter(Boolean);
      try {
        return parts.length ? decodeURIComponent(parts[parts.length - 1]) : "";
      } catch (err) {
        return "";
      }
    },

    onScreen: function (screen) {
      if (!validId(screen.screen_id) || screen.screen_id !== this.screenId) return;
      var rows = Array.isArray(screen.rows) ? screen.rows : [];
      this.root.setAttribute("data-ts", typeof screen.ts === "string" ? screen.ts : "");
      this.root.classList.remove("is-waiting");
      if (typeof screen.name === "string") {
        byId("sign-name").textContent = screen.name;
        document.title = screen.name + " · ParkGate 智慧停车";
      }
      var list = byId("sign-rows");
      clear(list);
      rows.forEach(function (row) {
        if (row && validId(row.lot_id)) list.appendChild(sign.renderRow(row));
      });
      list.style.setProperty("--rows", String(Math.max(rows.length, 1)));
      this.tick();
    },

    renderRow: function (row) {
      var full = row.full === true || toInt(row.free) === 0;
      var state = SIGN_STATES.indexOf(row.state) >= 0 ? row.state : full ? "full" : "ok";
      var text = typeof row.text === "string" ? row.text : full ? "满" : String(toInt(row.free));
      var node = el("div", "sign-row is-" + state);
      node.id = "row-" + row.lot_id;
      node.setAttribute("data-lot", row.lot_id);
      node.setAttribute("data-state", state);
      node.setAttribute("data-mode", typeof row.mode === "string" ? row.mode : "auto");
      node.setAttribute("data-text", text);
      var age = Number(row.data_age_s);
      node.setAttribute("data-age", row.data_age_s !== null && isFinite(age) ? String(age) : "");
      var limit = Number(row.stale_after_s);
      node.setAttribute("data-limit", limit > 0 ? String(limit) : "");
      var arrow = arrowName(row.arrow);
      var arrowNode = el("span", "arrow arrow-" + arrow, arrow === "none" ? "" : ARROWS[arrow]);
      arrowNode.setAttribute("aria-hidden", "true");
      node.appendChild(arrowNode);
      node.appendChild(el("span", "label", typeof row.label === "string" ? row.label : row.lot_id));
      var value = el("span", "value");
      value.appendChild(el("span", "free", text));
      value.appendChild(el("span", "updating", "数据更新中"));
      node.appendChild(value);
      return node;
    },

    /**
     * Age of a row's data now (s): its data_age_s when the content was made plus the time since.
     * A row without data_age_s comes from a collector that does not track it: the content's age.
     * NaN: never confirmed.
     */
    rowAge: function (row, elapsed) {
      var base = row.getAttribute("data-age");
      if (base) return Number(base) + elapsed;
      return row.getAttribute("data-state") === "stale" ? NaN : elapsed;
    },

    /**
     * Stale (the number is hidden, "--" shown) when the collector said so, or when the page can
     * see it: the data (auto rows) or the content itself (any row, also an operator's mode: it
     * may have ended since) is older than the row's limit. Runs every second.
     */
    tick: function () {
      var self = this;
      var now = Date.now();
      var ts = parseTs(this.root.getAttribute("data-ts"));
      var elapsed = Math.max((now - ts) / 1000, 0);
      var waiting = this.root.classList.contains("is-waiting");
      var anyStale = false;
      var oldest = -1;
      var rows = Array.prototype.slice.call(this.root.querySelectorAll(".sign-row[data-lot]"));
      rows.forEach(function (row) {
        var limit = Number(row.getAttribute("data-limit")) || STALE_MS / 1000;
        var state = row.getAttribute("data-state");
        var auto = (row.getAttribute("data-mode") || "auto") === "auto";
        var age = self.rowAge(row, elapsed);
        var stale = !isFinite(ts) || elapsed > limit || (auto && (state === "stale" || !(age <= limit)));
        if (isFinite(age)) oldest = Math.max(oldest, age);
        anyStale = anyStale || stale;
        row.classList.toggle("is-stale", stale);
        var shown = stale && state !== "stale" ? STALE_TEXT : row.getAttribute("data-text");
        var free = row.querySelector(".free");
        if (free && free.textContent !== shown) free.textContent = shown;
      });
      var ageNode = byId("sign-age");
      if (waiting) {
        ageNode.textContent = "等待数据 · WAITING FOR DATA";
      } else {
        var parts = ageParts(oldest >= 0 ? oldest * 1000 : now - ts);
        var prefix = anyStale ? "数据过期 STALE · " : "";
        ageNode.textContent = prefix + "数据 " + parts[0] + (parts[1] ? " · DATA " + parts[1].toUpperCase() : "");
      }
      this.root.classList.toggle("is-stale", !waiting && (anyStale || !isFinite(ts)));
      this.root.classList.remove("is-checking");
    }
  };

  // ---- start --------------------------------------------------------------------------------

  function start() {
    var page = document.body && document.body.getAttribute("data-page");
    if (page === "index") overview.init();
    else if (page === "screen") sign.init();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();

  return {
    overview: overview,
    sign: sign,
    api: { postJSON: postJSON, getJSON: getJSON },
    stream: { connect: connect, setConnState: setConnState },
    dom: { byId: byId, el: el, clear: clear, flash: flash },
    util: {
      parseTs: parseTs, ageParts: ageParts, ageText: ageText, level: level, isStale: isStale, t: t,
      format: format, readJSON: readJSON, validId: validId, pad2: pad2
    }
  };
})();
