// Runs Python code on real MicroPython (the WebAssembly port) under Node.
// usage: node mp_runner.mjs SPEC.json
//   SPEC = {"files": {"/lib/x.py": "/abs/src/x.py", ...}, "path": ["/lib"], "script": "python source"}
// Files (.py or .mpy) are copied into the interpreter's in-memory filesystem; the
// script's stdout/stderr are forwarded; exit code 1 if it raised.
import { readFileSync } from "node:fs";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const mp = await loadMicroPython({
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
for (const [dest, src] of Object.entries(spec.files || {})) {
  const dir = dest.substring(0, dest.lastIndexOf("/"));
  if (dir) mp.FS.mkdirTree(dir);
  mp.FS.writeFile(dest, readFileSync(src));
}
mp.FS.mkdirTree("/data");
const paths = (spec.path || []).map((p) => JSON.stringify(p)).join(", ");
try {
  mp.runPython(`import sys\nfor _p in [${paths}]:\n    sys.path.insert(0, _p)\n`);
  // async so scripts may `await`: this port only collects garbage once the stack has unwound to JS
  await mp.runPythonAsync(spec.script);
} catch (err) {
  process.stderr.write(String(err && err.message ? err.message : err) + "\n");
  process.exit(1);
}
