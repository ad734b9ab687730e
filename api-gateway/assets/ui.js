// Flinger's web UI: live updates over Server-Sent Events, reservation countdowns, copy buttons.
// Output is added as text nodes (never as markup); ANSI colours become spans, as on the server.
(function () {
  "use strict";

  function ansiAppend(parent, text, state) {
    // state: {fg: null|number, bold: bool}; mirrors ui/text.rs.
    var re = /\x1b(?:\[([0-9;?]*)([@-~])|.)/g, last = 0, m;
    function put(s) {
      s = s.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
      if (!s) return;
      var cls = [];
      if (state.fg !== null) cls.push("ansi-" + state.fg);
      if (state.bold) cls.push("ansi-b");
      if (cls.length) {
        var span = document.createElement("span");
        span.className = cls.join(" ");
        span.textContent = s;
        parent.appendChild(span);
      } else {
        parent.appendChild(document.createTextNode(s));
      }
    }
    while ((m = re.exec(text)) !== null) {
      put(text.slice(last, m.index));
      last = re.lastIndex;
      if (m[2] === "m") {
        var codes = (m[1] || "0").split(";");
        for (var i = 0; i < codes.length; i++) {
          var c = parseInt(codes[i] || "0", 10);
          if (c === 0) { state.fg = null; state.bold = false; }
          else if (c === 1) state.bold = true;
          else if (c === 22) state.bold = false;
          else if (c >= 30 && c <= 37) state.fg = c - 30;
          else if (c >= 90 && c <= 97) state.fg = c - 90 + 8;
          else if (c === 39) state.fg = null;
        }
      }
    }
    put(text.slice(last));
  }

  var ansiState = {};

  function appendOutput(msg) {
    var pre = document.getElementById("out-" + msg.stream);
    if (!pre) return;
    var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    var empty = pre.querySelector(".empty");
    if (empty) empty.remove();
    if (pre.dataset.phase !== msg.phase) {
      var head = document.createElement("span");
      head.className = "phase-head";
      head.textContent = "\u2500\u2500 " + msg.phase + " \u2500\u2500\n";
      pre.appendChild(head);
      pre.dataset.phase = msg.phase;
      ansiState[msg.stream] = {fg: null, bold: false};
    }
    ansiAppend(pre, msg.text, ansiState[msg.stream] || (ansiState[msg.stream] = {fg: null, bold: false}));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  function fmt(secs) {
    if (secs <= 0) return "ended";
    var d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600),
        m = Math.floor(secs % 3600 / 60), s = secs % 60;
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return (d ? d + " d " : "") + (d || h ? p(h) + ":" : "") + p(m) + ":" + p(s);
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-until]").forEach(function (el) {
      el.textContent = fmt(Math.floor((parseInt(el.dataset.until, 10) - now) / 1000));
    });
  }

  document.addEventListener("click", function (e) {
    var btn = e.target.closest ? e.target.closest("[data-copy]") : null;
    if (!btn) return;
    var src = document.getElementById(btn.dataset.copy);
    if (!src) return;
    var text = src.textContent;
    function done() { btn.textContent = "Copied"; setTimeout(function () { btn.textContent = "Copy"; }, 1500); }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      var ta = document.createElement("textarea");
      ta.value = text; document.body.appendChild(ta); ta.select();
      try { document.execCommand("copy"); done(); } finally { ta.remove(); }
    }
  });

  function connect() {
    var url = document.body.dataset.live;
    if (!url || !window.EventSource) return;
    var status = document.getElementById("live-status");
    var es = new EventSource(url);
    es.onopen = function () { if (status) { status.classList.add("on"); status.title = "live"; } };
    es.onerror = function () { if (status) { status.classList.remove("on"); status.title = "reconnecting"; } };
    es.addEventListener("region", function (e) {
      var region = document.getElementById("live-region");
      if (region) region.innerHTML = JSON.parse(e.data);
      tick();
    });
    es.addEventListener("output", function (e) { appendOutput(JSON.parse(e.data)); });
    es.addEventListener("reset", function () {
      document.querySelectorAll("pre.output").forEach(function (pre) {
        pre.textContent = ""; delete pre.dataset.phase;
      });
      ansiState = {};
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    connect();
  });
})();
