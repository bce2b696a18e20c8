// dsp3d report viewer: the test scenes as WebGL points, one buffer and one draw call per frame.
// Written for this report (no library): WebGL 1, so it runs in every browser and in headless
// Chromium's software renderer. Frames are drawn only when something changed, so an idle page costs
// nothing and dragging redraws at most once per display frame.
(function () {
  "use strict";

  var root = document.getElementById("viewer");
  var source = document.getElementById("dsp3d-data");
  if (!root || !source) return;
  var data = JSON.parse(source.textContent);
  var canvas = root.querySelector("canvas");
  var status = root.querySelector(".viewer-status");
  var legend = root.querySelector(".viewer-legend");

  function say(text) {
    status.textContent = text;
  }

  // ---- data -----------------------------------------------------------------------------------
  function bytes(text) {
    var binary = atob(text);
    var out = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  }

  var decoded = {}; // scene index -> typed arrays, decoded on first view
  function scene(index) {
    if (!decoded[index]) {
      var s = data.scenes[index];
      var predictions = {};
      for (var run in s.predictions) predictions[run] = bytes(s.predictions[run]);
      var raw = bytes(s.positions);
      decoded[index] = {
        info: s,
        // uint16 x, y, z per point, little-endian like the file (see viewer.py).
        positions: new Uint16Array(raw.buffer, raw.byteOffset, s.count * 3),
        truth: bytes(s.truth),
        rgb: s.rgb ? bytes(s.rgb) : null,
        predictions: predictions,
      };
    }
    return decoded[index];
  }

  // ---- colours --------------------------------------------------------------------------------
  var state = { scene: 0, mode: "prediction", run: data.runs[0] || null, size: 2, clip: 1 };

  function colours(d) {
    var n = d.info.count;
    var out = new Uint8Array(n * 3);
    var palette = data.palette, none = data.noLabel;
    var truth = d.truth, pred = state.run ? d.predictions[state.run] : null;
    for (var i = 0; i < n; i++) {
      var c;
      if (state.mode === "rgb" && d.rgb) {
        out[3 * i] = d.rgb[3 * i];
        out[3 * i + 1] = d.rgb[3 * i + 1];
        out[3 * i + 2] = d.rgb[3 * i + 2];
        continue;
      }
      if (state.mode === "error" && pred) {
        c = truth[i] === none ? data.unlabelled : pred[i] === truth[i] ? data.correct : data.wrong;
      } else {
        var label = state.mode === "prediction" && pred ? pred[i] : truth[i];
        c = label === none || label >= palette.length ? data.unlabelled : palette[label];
      }
      out[3 * i] = c[0];
      out[3 * i + 1] = c[1];
      out[3 * i + 2] = c[2];
    }
    return out;
  }

  // ---- WebGL ----------------------------------------------------------------------------------
  var gl = canvas.getContext("webgl", { antialias: false }) || canvas.getContext("experimental-webgl");
  if (!gl) {
    say("WebGL is not available in this browser: the 3D viewer is off (tables and plots are unaffected).");
    root.setAttribute("data-state", "no-webgl");
    console.warn("dsp3d viewer: no WebGL");
    return;
  }

  var VERTEX = [
    "attribute vec3 a_position;", // uint16 fractions of the bounding box, normalised to [0, 1]
    "attribute vec3 a_colour;",
    "uniform mat4 u_matrix;",
    "uniform vec3 u_min;",
    "uniform vec3 u_extent;",
    "uniform float u_clip;",
    "uniform float u_size;",
    "varying vec3 v_colour;",
    "void main() {",
    "  vec3 p = u_min + a_position * u_extent;",
    "  v_colour = a_colour;",
    "  gl_PointSize = u_size;",
    // Points above the height clip are moved outside the view volume: hidden without re-uploading.
    "  gl_Position = p.z > u_clip ? vec4(2.0, 2.0, 2.0, 1.0) : u_matrix * vec4(p, 1.0);",
    "}",
  ].join("\n");
  var FRAGMENT = [
    "precision mediump float;",
    "varying vec3 v_colour;",
    "void main() {",
    "  vec2 d = gl_PointCoord - vec2(0.5);",
    "  if (dot(d, d) > 0.25) discard;", // round points
    "  gl_FragColor = vec4(v_colour, 1.0);",
    "}",
  ].join("\n");

  function shader(type, text) {
    var s = gl.createShader(type);
    gl.shaderSource(s, text);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  }
  var program = gl.createProgram();
  gl.attachShader(program, shader(gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(program, shader(gl.FRAGMENT_SHADER, FRAGMENT));
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
  gl.useProgram(program);
  var loc = {
    position: gl.getAttribLocation(program, "a_position"),
    colour: gl.getAttribLocation(program, "a_colour"),
    matrix: gl.getUniformLocation(program, "u_matrix"),
    min: gl.getUniformLocation(program, "u_min"),
    extent: gl.getUniformLocation(program, "u_extent"),
    clip: gl.getUniformLocation(program, "u_clip"),
    size: gl.getUniformLocation(program, "u_size"),
  };
  var positionBuffer = gl.createBuffer();
  var colourBuffer = gl.createBuffer();
  gl.enable(gl.DEPTH_TEST);
  gl.clearColor(1, 1, 1, 1);
  var pointSizeRange = gl.getParameter(gl.ALIASED_POINT_SIZE_RANGE);

  // ---- camera: orbit around a target, z up ------------------------------------------------------
  var camera = { yaw: -0.6, pitch: 0.7, distance: 10, target: [0, 0, 0] };
  var FIELD_OF_VIEW = (45 * Math.PI) / 180; // vertical
  var MARGIN = 1.05; // a little room around the scene

  // The distance at which a sphere of ``radius`` fills the narrower of the two fields of view: seen
  // from any direction, the sphere (and so everything inside it) is then in view, uncropped.
  function fitDistance(radius, aspect) {
    var half = Math.atan(Math.tan(FIELD_OF_VIEW / 2) * Math.min(1, aspect));
    return (MARGIN * radius) / Math.sin(half);
  }

  // The first view, and the view a double click returns to: the whole scene, whatever its shape,
  // around the centre of its bounding box, within the box's bounding sphere.
  function resetCamera() {
    var e = scene(state.scene).info.extent, m = scene(state.scene).info.min;
    camera.target = [m[0] + e[0] / 2, m[1] + e[1] / 2, m[2] + e[2] / 2];
    var radius = Math.max(Math.sqrt(e[0] * e[0] + e[1] * e[1] + e[2] * e[2]) / 2, 1e-3);
    resize(); // the aspect ratio of the canvas as it is shown
    camera.distance = fitDistance(radius, canvas.width / Math.max(1, canvas.height));
    camera.yaw = -0.6;
    camera.pitch = 0.7;
  }

  function eye() {
    var c = Math.cos(camera.pitch), t = camera.target, d = camera.distance;
    return [
      t[0] + d * c * Math.sin(camera.yaw),
      t[1] - d * c * Math.cos(camera.yaw),
      t[2] + d * Math.sin(camera.pitch),
    ];
  }

  function sub(a, b) { return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]; }
  function cross(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]; }
  function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
  function unit(a) { var l = Math.sqrt(dot(a, a)) || 1; return [a[0] / l, a[1] / l, a[2] / l]; }

  // Camera axes: right, up, and back (from the target towards the eye).
  function axes() {
    var back = unit(sub(eye(), camera.target));
    var right = unit(cross([0, 0, 1], back));
    return { right: right, up: cross(back, right), back: back };
  }

  // Column-major projection * view, as uniformMatrix4fv expects.
  function matrix() {
    var a = axes(), e = eye();
    var aspect = canvas.width / Math.max(1, canvas.height);
    var near = camera.distance / 100, far = camera.distance * 10;
    var f = 1 / Math.tan(FIELD_OF_VIEW / 2);
    var view = [
      a.right[0], a.up[0], a.back[0], 0,
      a.right[1], a.up[1], a.back[1], 0,
      a.right[2], a.up[2], a.back[2], 0,
      -dot(a.right, e), -dot(a.up, e), -dot(a.back, e), 1,
    ];
    var proj = [
      f / aspect, 0, 0, 0,
      0, f, 0, 0,
      0, 0, (far + near) / (near - far), -1,
      0, 0, (2 * far * near) / (near - far), 0,
    ];
    var out = new Float32Array(16);
    for (var col = 0; col < 4; col++) {
      for (var row = 0; row < 4; row++) {
        var s = 0;
        for (var k = 0; k < 4; k++) s += proj[k * 4 + row] * view[col * 4 + k];
        out[col * 4 + row] = s;
      }
    }
    return out;
  }

  // ---- drawing --------------------------------------------------------------------------------
  var uploaded = -1; // scene index whose positions are in positionBuffer
  var pending = false;

  function upload() {
    var d = scene(state.scene);
    if (uploaded !== state.scene) {
      gl.bindBuffer(gl.ARRAY_BUFFER, positionBuffer);
      gl.bufferData(gl.ARRAY_BUFFER, d.positions, gl.STATIC_DRAW);
      uploaded = state.scene;
    }
    gl.bindBuffer(gl.ARRAY_BUFFER, colourBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, colours(d), gl.STATIC_DRAW);
  }

  function resize() {
    var ratio = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.round(canvas.clientWidth * ratio));
    var h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
  }

  function draw() {
    pending = false;
    resize();
    var d = scene(state.scene), info = d.info;
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.bindBuffer(gl.ARRAY_BUFFER, positionBuffer);
    gl.enableVertexAttribArray(loc.position);
    gl.vertexAttribPointer(loc.position, 3, gl.UNSIGNED_SHORT, true, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, colourBuffer);
    gl.enableVertexAttribArray(loc.colour);
    gl.vertexAttribPointer(loc.colour, 3, gl.UNSIGNED_BYTE, true, 0, 0);
    gl.uniformMatrix4fv(loc.matrix, false, matrix());
    gl.uniform3fv(loc.min, info.min);
    gl.uniform3fv(loc.extent, info.extent);
    gl.uniform1f(loc.clip, info.min[2] + state.clip * info.extent[2] + 1e-6);
    var ratio = window.devicePixelRatio || 1;
    gl.uniform1f(loc.size, Math.min(pointSizeRange[1], state.size * ratio));
    gl.drawArrays(gl.POINTS, 0, info.count);
    canvas.setAttribute("data-drawn", String(info.count));
    canvas.setAttribute("data-mode", state.mode);
    root.setAttribute("data-state", "drawn");
  }

  function redraw() {
    if (!pending) {
      pending = true;
      window.requestAnimationFrame(draw);
    }
  }

  // ---- controls -------------------------------------------------------------------------------
  function hex(c) {
    return "#" + c.map(function (v) { return (v < 16 ? "0" : "") + v.toString(16); }).join("");
  }

  function swatch(colour, name) {
    var item = document.createElement("span");
    var box = document.createElement("i");
    box.style.background = hex(colour);
    item.appendChild(box);
    item.appendChild(document.createTextNode(name));
    return item;
  }

  function updateLegend() {
    var d = scene(state.scene);
    legend.textContent = "";
    if (state.mode === "error") {
      legend.appendChild(swatch(data.correct, "correct"));
      legend.appendChild(swatch(data.wrong, "wrong"));
      if (d.truth.indexOf(data.noLabel) >= 0) legend.appendChild(swatch(data.unlabelled, "unlabelled"));
    } else if (state.mode !== "rgb") {
      var labels = state.mode === "prediction" && state.run ? d.predictions[state.run] : d.truth;
      var seen = {};
      for (var i = 0; i < labels.length; i++) seen[labels[i]] = true;
      data.classes.forEach(function (name, c) {
        if (seen[c]) legend.appendChild(swatch(data.palette[c], name));
      });
    }
    var text = d.info.name + ": " + d.info.count.toLocaleString() + " points";
    if (state.run && state.mode !== "truth" && state.mode !== "rgb" && d.info.accuracy[state.run] >= 0) {
      text += " \u00b7 " + state.run + " right on " + d.info.accuracy[state.run].toFixed(1) + "% of them";
    }
    say(text);
  }

  function refresh() {
    upload();
    updateLegend();
    root.querySelectorAll("[data-set-mode]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.getAttribute("data-set-mode") === state.mode));
    });
    redraw();
  }

  root.querySelectorAll("[data-set-mode]").forEach(function (button) {
    var mode = button.getAttribute("data-set-mode");
    if (mode === "rgb" && !data.scenes.some(function (s) { return s.rgb; })) button.disabled = true;
    if ((mode === "prediction" || mode === "error") && !data.runs.length) button.disabled = true;
    button.addEventListener("click", function () {
      state.mode = mode;
      refresh();
    });
  });

  function fillSelect(select, names, onChange) {
    names.forEach(function (name, i) {
      var option = document.createElement("option");
      option.value = String(i);
      option.textContent = name;
      select.appendChild(option);
    });
    select.addEventListener("change", function () { onChange(Number(select.value)); });
  }

  fillSelect(root.querySelector(".viewer-scene"), data.scenes.map(function (s) { return s.name; }), function (i) {
    state.scene = i;
    state.clip = data.scenes[i].clip;
    clipInput.value = String(state.clip);
    resetCamera();
    refresh();
  });
  fillSelect(root.querySelector(".viewer-run"), data.runs, function (i) {
    state.run = data.runs[i];
    refresh();
  });

  var sizeInput = root.querySelector(".viewer-size");
  sizeInput.addEventListener("input", function () {
    state.size = Number(sizeInput.value);
    redraw();
  });
  var clipInput = root.querySelector(".viewer-clip");
  clipInput.addEventListener("input", function () {
    state.clip = Number(clipInput.value);
    redraw();
  });

  // Mouse: drag rotates, shift-drag or right-drag pans, the wheel zooms, a double click resets.
  var drag = null;
  canvas.addEventListener("contextmenu", function (event) { event.preventDefault(); });
  canvas.addEventListener("pointerdown", function (event) {
    drag = { x: event.clientX, y: event.clientY, pan: event.shiftKey || event.button === 2 };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointerup", function () { drag = null; });
  canvas.addEventListener("pointermove", function (event) {
    if (!drag) return;
    var dx = event.clientX - drag.x, dy = event.clientY - drag.y;
    drag.x = event.clientX;
    drag.y = event.clientY;
    if (drag.pan) {
      var a = axes(), k = camera.distance / Math.max(1, canvas.clientHeight);
      for (var i = 0; i < 3; i++) camera.target[i] += (-dx * a.right[i] + dy * a.up[i]) * k;
    } else {
      camera.yaw -= dx * 0.008;
      camera.pitch = Math.max(-1.55, Math.min(1.55, camera.pitch + dy * 0.008));
    }
    redraw();
  });
  canvas.addEventListener("wheel", function (event) {
    event.preventDefault();
    camera.distance *= Math.exp(event.deltaY * 0.001);
    redraw();
  }, { passive: false });
  canvas.addEventListener("dblclick", function () {
    resetCamera();
    redraw();
  });
  window.addEventListener("resize", redraw);

  // A small API for scripts and tests: the state, and the time of frames drawn back to back. Reading
  // one pixel back after each frame waits until the frame is really drawn (finish() may not).
  var probe = new Uint8Array(4);
  window.dsp3dViewer = {
    state: state,
    camera: camera,
    draw: draw,
    frameMs: function (frames) {
      var start = performance.now();
      for (var i = 0; i < frames; i++) {
        camera.yaw += 0.01;
        draw();
        gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, probe);
      }
      return (performance.now() - start) / frames;
    },
  };

  if (!data.scenes.length) {
    say("No test scene in this report.");
    root.setAttribute("data-state", "empty");
    return;
  }
  state.clip = data.scenes[0].clip;
  clipInput.value = String(state.clip);
  resetCamera();
  refresh();
})();
