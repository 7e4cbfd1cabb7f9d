// Switchboard: the agent's panel on a CRM page.
// <script src="https://HOST/embed.js" data-corner="bottom-right" async></script>
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__switchboardEmbed) { return; }
  window.__switchboardEmbed = true;
  var origin = new URL(script.src).origin;
  var corner = script.getAttribute("data-corner") || {{ corner|tojson }};
  if (corner !== "bottom-left" && corner !== "bottom-right") { corner = {{ corner|tojson }}; }
  var side = corner === "bottom-left" ? "left" : "right";
  var button = document.createElement("button");
  button.type = "button";
  button.setAttribute("data-switchboard", "toggle");
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-label", {{ _("Phone")|tojson }});
  button.textContent = "\u260E";
  var s = button.style;
  s.position = "fixed"; s.bottom = "20px"; s[side] = "20px"; s.zIndex = "2147483000";
  s.width = "56px"; s.height = "56px"; s.borderRadius = "50%"; s.border = "0";
  s.background = "#1f6feb"; s.color = "#fff"; s.fontSize = "26px"; s.cursor = "pointer";
  s.boxShadow = "0 2px 10px rgba(0,0,0,.3)";
  var frame = null;
  function toggle() {
    if (!frame) {
      frame = document.createElement("iframe");
      frame.src = origin + "/widget/panel";
      frame.title = "Switchboard";
      frame.setAttribute("data-switchboard", "panel");
      frame.allow = "autoplay";
      var f = frame.style;
      f.position = "fixed"; f.bottom = "86px"; f[side] = "20px"; f.zIndex = "2147483000";
      f.width = "380px"; f.height = "600px"; f.maxHeight = "calc(100vh - 110px)";
      f.border = "1px solid #ccd"; f.borderRadius = "10px"; f.background = "#fff";
      f.boxShadow = "0 4px 24px rgba(0,0,0,.25)";
      document.body.appendChild(frame);
      button.setAttribute("aria-expanded", "true");
      return;
    }
    var open = frame.style.display !== "none";
    frame.style.display = open ? "none" : "block";
    button.setAttribute("aria-expanded", open ? "false" : "true");
  }
  button.addEventListener("click", toggle);
  function mount() { document.body.appendChild(button); }
  if (document.body) { mount(); } else { document.addEventListener("DOMContentLoaded", mount); }
})();
