// Builds email.js into a component against ../../wit (world `connected-plugin`):
//
//     node build.mjs [out.wasm]
//
// `jco componentize` is not used: it fails on this world, while the library call works.
import { componentize } from "@bytecodealliance/componentize-js";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, "..", "target", "javascript", "email-js.wasm");
const { component } = await componentize({
  sourcePath: join(here, "email.js"),
  witPath: join(here, "..", "..", "wit"),
  worldName: "connected-plugin",
  // `fetch` sends through the world's wasi:http import; the job handles no incoming requests.
  disableFeatures: ["fetch-event"],
});
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
