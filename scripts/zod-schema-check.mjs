// Structured output against zod, the validator OpenAI's Node SDK parses
// answers with: writes the JSON schema that `zodResponseFormat` makes of an
// order (a regex, the email, uuid, date-time, date and ipv4 formats, bounded
// numbers, a nullable bounded string), or checks an answer with zod's own
// safeParse of the same object. Outside ctest (needs npm):
//   npm install --prefix /tmp/oai openai zod@3
//   NODE_PATH=/tmp/oai/node_modules node scripts/zod-schema-check.mjs schema order.json
//   kvplan compile models/tiny.toml --max-seq 2048 -o tiny.kvp
//   kvplan run tiny.kvp -p x -n 1900 --temperature 1 --seed 2 --json-schema order.json > out
//   NODE_PATH=/tmp/oai/node_modules node scripts/zod-schema-check.mjs check out x
// ("check FILE PROMPT": the answer is FILE's text after PROMPT.) Exits 1 when
// zod refuses the answer.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const require = createRequire(path.join(process.env.NODE_PATH ?? process.cwd(), 'x.js'));
const { zodResponseFormat } = require('openai/helpers/zod');
const { z } = require('zod');

const Order = z.object({
  sku: z.string().regex(/^[A-Z]{3}-\d{4}$/),
  email: z.string().email(),
  id: z.string().uuid(),
  when: z.string().datetime({ offset: true }),
  day: z.string().date(),
  qty: z.number().int().min(1).max(99),
  price: z.number().positive().lte(10000),
  ip: z.string().ip({ version: 'v4' }),
  note: z.string().max(40).nullable(),
});

const [mode, file, prompt] = process.argv.slice(2);
if (mode === 'schema') {
  writeFileSync(file, JSON.stringify(zodResponseFormat(Order, 'order').json_schema.schema));
} else if (mode === 'check') {
  const text = readFileSync(file, 'utf8').slice((prompt ?? '').length).trim();
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    console.log(`not JSON (a cut answer?): ${e.message}`);
    process.exit(1);
  }
  const r = Order.safeParse(value);
  console.log(r.success ? `ok ${JSON.stringify(value)}` : `FAIL ${JSON.stringify(r.error.issues)}`);
  process.exit(r.success ? 0 : 1);
} else {
  console.error('usage: zod-schema-check.mjs schema FILE | check FILE PROMPT');
  process.exit(2);
}
