// The browser side of the viewer: one canvas per scanout, updated from damage rectangles
// sent as binary WebSocket messages, and a cursor overlay. Kept as a string so the package
// has no build step for the page.

/** Binary message kinds (first byte). Header: kind u8, scanout u8, pad u16, then x, y, w, h as u32 LE. */
export const VIEWER_MESSAGE_RECT = 1;
export const VIEWER_MESSAGE_MODE = 2;
export const VIEWER_MESSAGE_CURSOR = 3;
export const VIEWER_MESSAGE_CURSOR_MOVE = 4;
export const VIEWER_HEADER_SIZE = 20;

export const viewerPage = `<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>xvio gpu viewer</title>
<style>
  body { background: #222; color: #ccc; font: 13px sans-serif; margin: 12px; }
  .scanout { position: relative; display: inline-block; margin: 0 12px 12px 0; vertical-align: top; }
  .scanout canvas.screen { background: #000; image-rendering: pixelated; display: block; }
  .scanout canvas.cursor { position: absolute; left: 0; top: 0; pointer-events: none; display: none; }
  .label { margin-bottom: 4px; }
</style>
</head>
<body>
<div id="status">connecting</div>
<div id="scanouts"></div>
<script>
const state = { frames: 0, rects: 0, scanouts: {} };
window.__xvio = state;
const status = document.getElementById('status');
function scanout(id) {
  let s = state.scanouts[id];
  if (s) return s;
  const box = document.createElement('div');
  box.className = 'scanout';
  box.id = 'scanout-' + id;
  const label = document.createElement('div');
  label.className = 'label';
  const screen = document.createElement('canvas');
  screen.className = 'screen';
  screen.id = 'screen-' + id;
  const cursor = document.createElement('canvas');
  cursor.className = 'cursor';
  cursor.width = 64; cursor.height = 64;
  box.append(label, screen, cursor);
  document.getElementById('scanouts').append(box);
  s = state.scanouts[id] = { box, label, screen, cursor, context: screen.getContext('2d'), hot: [0, 0], updates: 0 };
  return s;
}
function connect() {
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => { status.textContent = 'connected'; };
  ws.onclose = () => { status.textContent = 'disconnected, retrying'; setTimeout(connect, 1000); };
  ws.onmessage = (event) => {
    const view = new DataView(event.data);
    const kind = view.getUint8(0), id = view.getUint8(1);
    const x = view.getUint32(4, true), y = view.getUint32(8, true), w = view.getUint32(12, true), h = view.getUint32(16, true);
    const s = scanout(id);
    if (kind === ${VIEWER_MESSAGE_MODE}) {
      if (x === 0) { s.box.style.display = 'none'; return; }
      s.box.style.display = '';
      if (s.screen.width !== x || s.screen.height !== y) { s.screen.width = x; s.screen.height = y; }
      s.label.textContent = 'scanout ' + id + ': ' + x + 'x' + y;
    } else if (kind === ${VIEWER_MESSAGE_RECT}) {
      const pixels = new Uint8ClampedArray(event.data, ${VIEWER_HEADER_SIZE}, w * h * 4);
      s.context.putImageData(new ImageData(pixels, w, h), x, y);
      s.updates++; state.rects++; state.last = { id, x, y, w, h };
      if (view.getUint8(2) === 1) state.frames++;
    } else if (kind === ${VIEWER_MESSAGE_CURSOR}) {
      if (w === 0) { s.cursor.style.display = 'none'; return; }
      s.hot = [x, y];
      s.cursor.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(event.data, ${VIEWER_HEADER_SIZE}, 64 * 64 * 4), 64, 64), 0, 0);
      s.cursor.style.display = 'block';
    } else if (kind === ${VIEWER_MESSAGE_CURSOR_MOVE}) {
      s.cursor.style.transform = 'translate(' + (x - s.hot[0]) + 'px,' + (y - s.hot[1] + s.label.offsetHeight + 4) + 'px)';
    }
  };
}
connect();
</script>
</body>
</html>
`;
