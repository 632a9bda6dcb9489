/*
 * The public "lots near me" page (dashboard/near.py, body[data-page="near"]).
 *
 * The point searched comes from the page (data-lat / data-lon: a typed place the server found,
 * or a position shared in the address) or from the browser's location when the driver taps the
 * button (the page then reloads with ?lat=&lon=, so the address can be shared). The lots are read
 * from /api/v1/lots?lat&lon&radius_km (nearest first, free spaces, distance, data age, stale) and
 * read again when one of them changes on the live stream (/api/v1/stream: `lot`, `gate`), and
 * once a minute whatever happens (staleness is judged by the server). Ages tick every second.
 * Everything goes into the DOM as text.
 */
/* eslint-env browser */
/* global ParkGate */
(function () {
  "use strict";

  var REFRESH_MS = 60000;
  var DEBOUNCE_MS = 300;
  var TICK_MS = 1000;
  var RETRY_MS = 5000;

  var body = document.body;
  if (!body || body.getAttribute("data-page") !== "near") return;

  var M = ParkGate.util.readJSON("near-i18n") || {};

  function t(key, vars) {
    return ParkGate.util.format(M, key, vars);
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function util() {
    return (window.ParkGate && ParkGate.util) || null;
  }

  var state = {
    lat: Number(body.getAttribute("data-lat")),
    lon: Number(body.getAttribute("data-lon")),
    place: body.getAttribute("data-place") || "",
    radius: Number(body.getAttribute("data-radius")) || 5,
    api: body.getAttribute("data-api"),
    shown: Object.create(null), // lot id -> true, for the stream
    fetchedAt: 0,
    pending: null
  };
  var hasPoint = body.hasAttribute("data-lat") && isFinite(state.lat) && isFinite(state.lon);

  function status(text) {
    var node = byId("near-status");
    if (node) node.textContent = text || "";
  }

  // ---- where am I ---------------------------------------------------------------------------

  function initLocate() {
    var button = byId("near-locate");
    if (!button) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      if (!navigator.geolocation) {
        status(t("unsupported"));
        return;
      }
      status(t("locating"));
      button.disabled = true;
      navigator.geolocation.getCurrentPosition(
        function (position) {
          var params = new URLSearchParams();
          params.set("lat", position.coords.latitude.toFixed(6));
          params.set("lon", position.coords.longitude.toFixed(6));
          params.set("radius_km", String(currentRadius()));
          window.location.assign(window.location.pathname + "?" + params.toString());
        },
        function (err) {
          button.disabled = false;
          status(err && err.code === 1 ? t("denied") : t("unavailable"));
        },
        { enableHighAccuracy: true, timeout: 15000, maximumAge: 60000 }
      );
    });
  }

  function currentRadius() {
    var select = byId("near-radius");
    var value = select ? Number(select.value) : state.radius;
    return value > 0 ? value : state.radius;
  }

  function initRadius() {
    var select = byId("near-radius");
    if (!select) return;
    select.addEventListener("change", function () {
      state.radius = currentRadius();
      if (!hasPoint) return;
      var params = new URLSearchParams(window.location.search);
      params.set("radius_km", String(state.radius));
      window.history.replaceState(null, "", window.location.pathname + "?" + params.toString());
      load();
    });
  }

  // ---- the list -----------------------------------------------------------------------------

  function load() {
    if (!hasPoint || !state.api) return;
    var params = new URLSearchParams();
    params.set("lat", String(state.lat));
    params.set("lon", String(state.lon));
    params.set("radius_km", String(state.radius));
    if (!state.fetchedAt) status(t("loading"));
    ParkGate.api
      .getJSON(state.api + "?" + params.toString())
      .then(function (data) {
        if (!data) throw new Error("no list");
        state.fetchedAt = Date.now();
        render(Array.isArray(data.lots) ? data.lots : []);
        status("");
      })
      .catch(function () {
        status(t("error"));
        window.setTimeout(load, RETRY_MS);
      });
  }

  function later() {
    if (state.pending) return;
    state.pending = window.setTimeout(function () {
      state.pending = null;
      load();
    }, DEBOUNCE_MS);
  }

  function distanceText(metres) {
    if (typeof metres !== "number" || !isFinite(metres)) return "";
    if (metres < 1000) return t("metres", { n: Math.max(10, Math.round(metres / 10) * 10) });
    return t("km", { n: (metres / 1000).toFixed(metres < 10000 ? 1 : 0) });
  }

  function render(lots) {
    var list = byId("near-list");
    var tpl = byId("near-item");
    if (!list || !tpl || !tpl.content) return;
    while (list.firstChild) list.removeChild(list.firstChild);
    state.shown = Object.create(null);
    lots.forEach(function (lot) {
      if (!lot || typeof lot.id !== "string") return;
      state.shown[lot.id] = true;
      list.appendChild(item(tpl, lot));
    });
    var empty = byId("near-empty");
    if (empty) empty.hidden = lots.length > 0;
    var emptyText = byId("near-empty-text");
    if (emptyText) emptyText.textContent = t("none", { km: state.radius });
    tick();
  }

  function item(tpl, lot) {
    var node = tpl.content.querySelector(".near-item").cloneNode(true);
    var u = util();
    var capacity = Math.max(0, Number(lot.capacity) || 0);
    var stale = lot.stale === true || lot.free === null;
    var free = stale ? null : Math.max(0, Number(lot.free) || 0);
    var level = stale ? "stale" : lot.state === "closed" ? "full" : u ? u.level(free, capacity) : "ok";
    node.id = "near-" + lot.id;
    node.setAttribute("data-lot", lot.id);
    node.setAttribute("data-age", lot.data_age_s === null || lot.data_age_s === undefined ? "" : String(lot.data_age_s));
    node.className = "near-item lvl-" + level + (stale ? " is-stale" : "") + (lot.state === "closed" ? " is-closed" : "");
    node.querySelector(".near-name").textContent = typeof lot.name === "string" ? lot.name : lot.id;
    node.querySelector(".near-distance").textContent = distanceText(lot.distance_m);
    node.querySelector(".near-free").textContent = stale ? "—" : String(free);
    node.querySelector(".near-unit").textContent = t("free") + " · " + t("of", { n: capacity });
    if (stale) node.setAttribute("data-last", String(Math.max(0, Number(lot.last_free) || 0)));
    var tag = node.querySelector(".near-state");
    var label = lot.state === "closed" ? t("closed") : !stale && free === 0 ? t("full") : stale ? t("stale") : "";
    tag.textContent = label;
    tag.hidden = !label;
    return node;
  }

  /** The data age of each lot now: its age when read plus the time since. */
  function tick() {
    var u = util();
    var since = state.fetchedAt ? Date.now() - state.fetchedAt : 0;
    Array.prototype.forEach.call(document.querySelectorAll(".near-item"), function (node) {
      var raw = node.getAttribute("data-age");
      var ageNode = node.querySelector(".near-age");
      if (!ageNode) return;
      if (raw === "" || raw === null) {
        ageNode.textContent = "";
        return;
      }
      var ms = Number(raw) * 1000 + since;
      var age = u ? u.ageText(ms) : Math.round(ms / 1000) + " s";
      var last = node.getAttribute("data-last");
      ageNode.textContent = last !== null ? t("last", { n: last, age: age }) : t("age", { age: age });
    });
  }

  // ---- live ---------------------------------------------------------------------------------

  function setConn(value) {
    var node = byId("conn");
    if (!node) return;
    node.setAttribute("data-state", value);
    var text = util() ? util().t("conn." + value) : value;
    var label = node.querySelector(".conn-label");
    if (label) label.textContent = text;
  }

  /** Whether a lot lies within the radius (haversine, as the API measures). */
  function near(lot) {
    if (typeof lot.lat !== "number" || typeof lot.lon !== "number") return false;
    var rad = Math.PI / 180;
    var dLat = (lot.lat - state.lat) * rad;
    var dLon = (lot.lon - state.lon) * rad;
    var a =
      Math.sin(dLat / 2) * Math.sin(dLat / 2) +
      Math.cos(state.lat * rad) * Math.cos(lot.lat * rad) * Math.sin(dLon / 2) * Math.sin(dLon / 2);
    var metres = 2 * 6371008.8 * Math.asin(Math.min(1, Math.sqrt(a)));
    return metres <= state.radius * 1000;
  }

  function follow() {
    var url = body.getAttribute("data-stream");
    if (!url || typeof EventSource === "undefined") return;
    var source = new EventSource(url);
    var opened = false;
    source.onopen = function () {
      setConn("live");
      if (opened) later(); // back after a break: read the list again
      opened = true;
    };
    source.onerror = function () {
      setConn("reconnecting");
    };
    function onChange(event) {
      try {
        var data = JSON.parse(event.data);
        if (data && state.shown[data.lot_id]) later();
        else if (data && event.type === "lot" && near(data)) later(); // a lot that just got a position
      } catch (err) {
        /* ignore a bad event */
      }
    }
    source.addEventListener("lot", onChange);
    source.addEventListener("gate", onChange);
  }

  initLocate();
  initRadius();
  if (hasPoint) {
    load();
    follow();
    window.setInterval(tick, TICK_MS);
    window.setInterval(load, REFRESH_MS);
  }
})();
