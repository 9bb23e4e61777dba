/**
 * Where new engine worker threads load their script from: engine-worker.js beside this module,
 * unless set otherwise (when running from sources, the worker must first be bundled). A module of
 * its own, importing nothing, so a test setup can set it without loading the engine.
 */
let script = new URL('./engine-worker.js', import.meta.url);

export function setEngineWorkerScript(url: URL): void {
  script = url;
}

export function engineWorkerScript(): URL {
  return script;
}
