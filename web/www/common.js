// Helpers both pages (app.js, bench.js) use.

export const $ = (id) => document.getElementById(id);

// The one-line #status element: what happens now, or what went wrong ('info' | 'error' styling).
export function setStatus(text, kind = 'info') {
  const status = $('status');
  status.textContent = text;
  status.className = kind;
}

// Browsers hide the adapter's name from wgpu; GPUAdapterInfo still tells vendor and architecture.
export async function adapterLabel(name) {
  if (name) return name;
  const adapter = await navigator.gpu.requestAdapter();
  const info = (adapter && adapter.info) || {};
  return [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') ||
    'an unnamed adapter';
}
