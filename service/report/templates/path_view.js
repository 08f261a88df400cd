// Interactive 3D view of the camera paths: an SVG redrawn on drag (rotate) and wheel (zoom).
// Data: the JSON in #path-data, {"estimated": {"centres": [[x,y,z]], "forward": [...]},
// "target": same or null}, OpenCV axes of the first camera (x right, y down, z forward).
(function () {
  "use strict";
  var svg = document.getElementById("path-view");
  var source = document.getElementById("path-data");
  if (!svg || !source) { return; }
  var data = JSON.parse(source.textContent);
  var NS = "http://www.w3.org/2000/svg";
  var WIDTH = 600, HEIGHT = 420;
  var START = { yaw: -0.7, pitch: -0.45, zoom: 1 };
  var view = { yaw: START.yaw, pitch: START.pitch, zoom: START.zoom };
  var paths = [{ poses: data.estimated, colour: "#0969da", dash: "" }];
  if (data.target) { paths.push({ poses: data.target, colour: "#d97706", dash: "6 4" }); }

  var points = [[0, 0, 0]];
  paths.forEach(function (p) { points = points.concat(p.poses.centres); });
  var middle = [0, 1, 2].map(function (i) {
    var values = points.map(function (q) { return q[i]; });
    return (Math.min.apply(null, values) + Math.max.apply(null, values)) / 2;
  });
  var extent = 1e-9;
  points.forEach(function (q) {
    extent = Math.max(extent, Math.hypot(q[0] - middle[0], q[1] - middle[1], q[2] - middle[2]));
  });
  var arrow = extent * 0.18;  // length of a viewing-direction tick

  function project(q) {
    // Rotate about the vertical (y, down) axis, then tilt about x; orthographic; SVG y is down.
    var x = q[0] - middle[0], y = q[1] - middle[1], z = q[2] - middle[2];
    var cy = Math.cos(view.yaw), sy = Math.sin(view.yaw), cp = Math.cos(view.pitch), sp = Math.sin(view.pitch);
    var x1 = cy * x + sy * z, z1 = -sy * x + cy * z;
    var y2 = cp * y - sp * z1;
    var scale = 0.42 * Math.min(WIDTH, HEIGHT) * view.zoom / extent;
    return [WIDTH / 2 + scale * x1, HEIGHT / 2 + scale * y2];
  }

  function element(name, attributes, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attributes).forEach(function (k) { node.setAttribute(k, attributes[k]); });
    parent.appendChild(node);
    return node;
  }

  function line(a, b, colour, width, parent, dash) {
    var p = project(a), q = project(b);
    return element("line", { x1: p[0], y1: p[1], x2: q[0], y2: q[1], stroke: colour,
      "stroke-width": width, "stroke-dasharray": dash || "" }, parent);
  }

  function draw() {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var axes = element("g", { "class": "axes" }, svg);
    var origin = [0, 0, 0];
    [[[arrow * 1.5, 0, 0], "#cf222e", "x"], [[0, arrow * 1.5, 0], "#1a7f37", "y"], [[0, 0, arrow * 1.5], "#6639ba", "z"]]
      .forEach(function (axis) {
        line(origin, axis[0], axis[1], 1.5, axes);
        var p = project(axis[0]);
        element("text", { x: p[0] + 3, y: p[1] - 3, fill: axis[1], "font-size": 12 }, axes).textContent = axis[2];
      });
    paths.forEach(function (path) {
      var group = element("g", { "class": "camera-path" }, svg);
      var centres = path.poses.centres;
      element("polyline", {
        points: centres.map(function (c) { return project(c).join(","); }).join(" "),
        fill: "none", stroke: path.colour, "stroke-width": 2, "stroke-dasharray": path.dash
      }, group);
      centres.forEach(function (c, i) {
        var f = path.poses.forward[i];
        line(c, [c[0] + arrow * f[0], c[1] + arrow * f[1], c[2] + arrow * f[2]], path.colour, 1, group);
        var p = project(c);
        element("circle", { cx: p[0], cy: p[1], r: i === 0 ? 5 : 3, fill: path.colour }, group);
      });
    });
  }

  var drag = null;
  svg.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY, yaw: view.yaw, pitch: view.pitch };
    svg.setPointerCapture(e.pointerId);
  });
  svg.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    view.yaw = drag.yaw + (e.clientX - drag.x) * 0.01;
    view.pitch = Math.max(-1.55, Math.min(1.55, drag.pitch - (e.clientY - drag.y) * 0.01));
    draw();
  });
  svg.addEventListener("pointerup", function () { drag = null; });
  svg.addEventListener("wheel", function (e) {
    e.preventDefault();
    view.zoom = Math.max(0.2, Math.min(8, view.zoom * Math.exp(-e.deltaY * 0.001)));
    draw();
  }, { passive: false });
  var reset = document.getElementById("path-reset");
  if (reset) {
    reset.addEventListener("click", function () {
      view.yaw = START.yaw; view.pitch = START.pitch; view.zoom = START.zoom; draw();
    });
  }
  draw();
})();
