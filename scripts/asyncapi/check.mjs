// Validates an AsyncAPI document with the AsyncAPI Initiative's own parser (its JSON Schema of
// the specification plus its rules). Prints every diagnostic; exits 1 on any error or warning.
import fs from 'node:fs';
import { Parser } from '@asyncapi/parser';

const SEVERITY = ['error', 'warning', 'information', 'hint'];
const text = fs.readFileSync(process.argv[2], 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
let bad = 0;
for (const d of diagnostics) {
  const level = SEVERITY[d.severity] ?? String(d.severity);
  console.log(`${level}: ${d.code}: ${d.message} at /${d.path.join('/')}`);
  if (d.severity <= 1) bad += 1;
}
if (!document || bad > 0) {
  console.error(`asyncapi-check: ${bad} errors or warnings`);
  process.exit(1);
}
console.log(`asyncapi-check: valid AsyncAPI ${document.version()}, ${document.allMessages().length} messages`);
