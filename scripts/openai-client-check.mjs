// Drives a running `kvplan serve` with the official OpenAI Node client, to
// show the API works unchanged with it: models, a completion, a stream with
// usage, chat (answered, or refused with a 400 when the model has no chat
// template), structured output (response_format json_schema), the
// Responses API (the chat's answer, streamed, through the SDK's stream
// helper, a forced function call carried back, text.format json_schema),
// an out-of-range field, and the API key when one is given.
// Outside ctest, since it needs the `openai` package from npm:
//   npm install --prefix /tmp/oai openai
//   OPENAI_MODULE=/tmp/oai/node_modules/openai/index.mjs \
//     node scripts/openai-client-check.mjs http://127.0.0.1:8000/v1 [API_KEY]
// Exits 1 on the first check that fails.
const { default: OpenAI } = await import(process.env.OPENAI_MODULE ?? 'openai');

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: apiKey ?? 'unused', maxRetries: 0 });

function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) process.exit(1);
}

const models = await client.models.list();
const model = models.data[0].id;
check(models.data.length === 1, `models.list: ${model}`);

const completion = await client.completions.create({
  model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0,
});
const text = completion.choices[0].text;
check(completion.usage.completion_tokens === 24 && completion.choices[0].finish_reason === 'length',
  `completions.create: ${JSON.stringify(text)}`);

let streamed = '';
let usage = null;
const stream = await client.completions.create({
  model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0, stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.choices.length) streamed += chunk.choices[0].text;
  if (chunk.usage) usage = chunk.usage;
}
check(streamed === text && usage?.completion_tokens === 24,
  'completions.create stream: the same text, and usage last');

const messages = [{ role: 'system', content: 'You tell stories.' },
  { role: 'user', content: 'Tell me one.' }];
let chat = null;
try {
  chat = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0 });
  let chatStreamed = '';
  const chatStream = await client.chat.completions.create({
    model, messages, max_tokens: 16, temperature: 0, stream: true,
  });
  for await (const chunk of chatStream) chatStreamed += chunk.choices[0]?.delta?.content ?? '';
  check(chat.choices[0].message.role === 'assistant' && chatStreamed === chat.choices[0].message.content,
    `chat.completions.create, and streamed alike: ${JSON.stringify(chat.choices[0].message.content)}`);
  // A forced tool call (needs a template with a tool format: llama3, chatml).
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: {
    type: 'object', properties: { unit: { enum: ['c', 'f'] } }, required: ['unit'],
    additionalProperties: false } } }];
  const called = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Weather?' }], tools, tool_choice: 'required',
    max_tokens: 200, temperature: 0.8, seed: 1,
  });
  const call = called.choices[0].message.tool_calls?.[0];
  check(called.choices[0].finish_reason === 'tool_calls' && call?.function.name === 'get_weather' &&
    ['c', 'f'].includes(JSON.parse(call.function.arguments).unit),
    `chat.completions.create with tool_choice required: ${JSON.stringify(call?.function)}`);
  const replied = await client.chat.completions.create({
    model, max_tokens: 4, tools, messages: [{ role: 'user', content: 'Weather?' },
      called.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '18 C' }],
  });
  check(typeof replied.choices[0].message.content === 'string' || replied.choices[0].message.tool_calls,
    'chat.completions.create with the call and its result in the conversation');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && (e.param === 'messages' || e.param === 'tools'),
    `chat.completions.create: 400 (${e.message})`);
}

// Structured output: an answer held to a schema whose every path is bounded
// (an enum, a pattern of fixed length, an integer from 1 to 5, then the
// object's close), so it ends with stop at any model.
const schema = {
  type: 'object',
  properties: { mood: { enum: ['happy', 'sad'] }, code: { type: 'string', pattern: '^[A-Z]{3}$' },
    stars: { type: 'integer', minimum: 1, maximum: 5 } },
  required: ['mood', 'code', 'stars'], additionalProperties: false,
};
const structured = await client.completions.create({
  model, prompt: 'Once upon a time', max_tokens: 200, temperature: 0.8, seed: 3,
  response_format: { type: 'json_schema', json_schema: { name: 'mood', strict: true, schema } },
});
const answer = structured.choices[0].text;
let parsed = null;
try { parsed = JSON.parse(answer); } catch { /* checked below */ }
check(structured.choices[0].finish_reason === 'stop' && parsed !== null &&
  ['happy', 'sad'].includes(parsed.mood) && /^[A-Z]{3}$/.test(parsed.code) &&
  Number.isInteger(parsed.stars) && parsed.stars >= 1 && parsed.stars <= 5 &&
  Object.keys(parsed).length === 3,
  `completions.create with response_format json_schema: ${JSON.stringify(answer)}`);
try {
  await client.completions.create({
    model, prompt: 'x', response_format: {
      type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object',
        properties: { s: { type: 'string', pattern: '(?=a)b' } } } },
    },
  });
  check(false, 'a schema keyword kvplan cannot hold generation to refused');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.param === 'response_format',
    `json_schema with a lookahead: BadRequestError naming response_format (${e.message})`);
}

// The Responses API, where the model has a chat template (else its 400).
const asked = { model, instructions: 'You tell stories.', input: 'Tell me one.',
  max_output_tokens: 16, temperature: 0 };
try {
  const resp = await client.responses.create(asked);
  check(resp.object === 'response' && chat !== null &&
    resp.output_text === chat.choices[0].message.content &&
    resp.usage.input_tokens === chat.usage.prompt_tokens &&
    resp.status === (chat.choices[0].finish_reason === 'length' ? 'incomplete' : 'completed'),
    `responses.create: the chat's answer, ${resp.status}: ${JSON.stringify(resp.output_text)}`);
  let deltas = '';
  let ended = null;
  for await (const ev of await client.responses.create({ ...asked, stream: true })) {
    if (ev.type === 'response.output_text.delta') deltas += ev.delta;
    if (ev.type === 'response.completed' || ev.type === 'response.incomplete') ended = ev.response;
  }
  check(deltas === resp.output_text && ended?.output[0].content[0].text === resp.output_text,
    'responses.create stream: the deltas and the last event\'s response give the same text');
  const final = await client.responses.stream(asked).finalResponse();
  check(final.output_text === resp.output_text, 'responses.stream helper: finalResponse()');
  const rtools = [{ type: 'function', name: 'get_weather', strict: true, parameters: {
    type: 'object', properties: { unit: { enum: ['c', 'f'] } }, required: ['unit'],
    additionalProperties: false } }];
  const called = await client.responses.create({
    model, input: 'Weather?', tools: rtools, tool_choice: 'required', max_output_tokens: 200,
    temperature: 0.8,
  });
  const fc = called.output.find((item) => item.type === 'function_call');
  check(fc?.name === 'get_weather' && ['c', 'f'].includes(JSON.parse(fc.arguments).unit),
    `responses.create with tool_choice required: ${JSON.stringify(fc)}`);
  const replied = await client.responses.create({
    model, max_output_tokens: 4, tools: rtools, input: [{ role: 'user', content: 'Weather?' }, fc,
      { type: 'function_call_output', call_id: fc.call_id, output: '18 C' }],
  });
  check(replied.output.length > 0, 'responses.create with the call and its output in the input');
  const shaped = await client.responses.create({
    model, input: 'Mood?', max_output_tokens: 200, temperature: 0.8,
    text: { format: { type: 'json_schema', name: 'mood', strict: true, schema } },
  });
  const mood = JSON.parse(shaped.output_text);
  check(['happy', 'sad'].includes(mood.mood) && /^[A-Z]{3}$/.test(mood.code),
    `responses.create with text.format json_schema: ${shaped.output_text}`);
} catch (e) {
  check(chat === null && e instanceof OpenAI.BadRequestError && e.param === 'input',
    `responses.create: ${e instanceof OpenAI.BadRequestError ? '400' : 'failed'} (${e.message})`);
}

try {
  await client.completions.create({ model, prompt: 'x', temperature: 5 });
  check(false, 'temperature 5 refused');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.param === 'temperature',
    `temperature 5: BadRequestError naming temperature (${e.message})`);
}

if (apiKey) {
  const wrong = new OpenAI({ baseURL, apiKey: apiKey + 'x', maxRetries: 0 });
  try {
    await wrong.models.list();
    check(false, 'a wrong key refused');
  } catch (e) {
    check(e instanceof OpenAI.AuthenticationError, `a wrong key: AuthenticationError (${e.message})`);
  }
}
console.log('openai-client-check: every check passed');
