// Chat templates against prompts written by hand from the model cards
// (Meta's Llama 2 and Llama 3 cards, Qwen's and SmolLM2's ChatML, Mistral's
// v3 instruct format, Phi-3.5-mini's template) and token ids from the model makers' own tests; the
// family chosen from a tokenizer's special tokens; and the OpenAI request
// checks that need no model.
#include "server/ChatTemplate.h"
#include "formats/Tokenizer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include <fstream>

using namespace kvplan;
using namespace kvplan::server;

namespace {

std::string modelPath(const std::string &rel) {
  return std::string(KVPLAN_SHARED_DIR) + "/models/" + rel;
}

#define REQUIRE_FILE(path)                                                                        \
  do {                                                                                            \
    if (!std::ifstream(path).good())                                                              \
      GTEST_SKIP() << "test data " << (path) << " is absent (set KVPLAN_SHARED_DIR)";             \
  } while (0)

const std::vector<ChatMessage> kSystemUser = {{"system", "You are a helpful assistant."},
                                              {"user", "Hello!"}};
const std::vector<ChatMessage> kTwoTurns = {{"user", "Hi"},
                                            {"assistant", "Hello! How can I help?"},
                                            {"user", "Tell me a joke."}};

} // namespace

TEST(ChatTemplate, Llama2) {
  EXPECT_EQ(chatText(renderChat(ChatTemplate::llama2, kSystemUser)),
            "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST]");
  EXPECT_EQ(chatText(renderChat(ChatTemplate::llama2, kTwoTurns)),
            "<s>[INST] Hi [/INST] Hello! How can I help? </s><s>[INST] Tell me a joke. [/INST]");
  // Turns must alternate from the user's, as the model was trained.
  EXPECT_THROW(renderChat(ChatTemplate::llama2, {{"assistant", "Hi"}}), ApiError);
  EXPECT_THROW(renderChat(ChatTemplate::llama2, {{"user", "a"}, {"user", "b"}}), ApiError);
  EXPECT_THROW(renderChat(ChatTemplate::llama2, {{"user", "a"}, {"system", "b"}}), ApiError);
}

TEST(ChatTemplate, Llama3) {
  EXPECT_EQ(chatText(renderChat(ChatTemplate::llama3, kSystemUser)),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Hello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, ChatMl) {
  EXPECT_EQ(chatText(renderChat(ChatTemplate::chatml, kSystemUser)),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(chatText(renderChat(ChatTemplate::chatml, kTwoTurns)),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?"
            "<|im_end|>\n<|im_start|>user\nTell me a joke.<|im_end|>\n<|im_start|>assistant\n");
}

// Phi-3.5-mini's published template's turns (Phi-3-mini-4k's adds BOS and
// no system turn; llama.cpp's built-in phi3 writes these).
TEST(ChatTemplate, Phi3) {
  EXPECT_EQ(chatText(renderChat(ChatTemplate::phi3, kSystemUser)),
            "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello!<|end|>\n"
            "<|assistant|>\n");
  EXPECT_EQ(chatText(renderChat(ChatTemplate::phi3, kTwoTurns)),
            "<|user|>\nHi<|end|>\n<|assistant|>\nHello! How can I help?<|end|>\n"
            "<|user|>\nTell me a joke.<|end|>\n<|assistant|>\n");
  EXPECT_THROW(renderChat(ChatTemplate::phi3, {{"tool", "42"}}), ApiError);
  // Its vocabulary's turn markers choose it, and <|end|> ends a turn; Phi-4's
  // <|im_sep|> is not ChatML's format, and has no built-in.
  auto vocabulary = [](std::vector<std::string> added) {
    nlohmann::json a = nlohmann::json::array();
    for (size_t i = 0; i < added.size(); ++i)
      a.push_back({{"id", 2 + int(i)}, {"content", added[i]}, {"special", true},
                   {"normalized", false}});
    return loadTokenizer("hf-bpe", nlohmann::json{{"added_tokens", a},
                                                  {"pre_tokenizer", {{"type", "ByteLevel"}}},
                                                  {"model",
                                                   {{"type", "BPE"},
                                                    {"vocab", {{"a", 0}, {"b", 1}, {"\u010a", 10}}},
                                                    {"merges", nlohmann::json::array()}}}}
                                       .dump());
  };
  auto phi3 = vocabulary({"<|system|>", "<|user|>", "<|assistant|>", "<|end|>"});
  EXPECT_EQ(detectChatTemplate(phi3.get(), Architecture::phi3), ChatTemplate::phi3);
  EXPECT_EQ(turnEnd(ChatTemplate::phi3, *phi3).ids, std::vector<int32_t>{5});
  EXPECT_EQ(tokenizeChat(*phi3, renderChat(ChatTemplate::phi3, {{"user", "ab"}})),
            (std::vector<int32_t>{3, 10, 0, 1, 5, 10, 4, 10})); // "\n" is Ċ (10)
  auto phi4 = vocabulary({"<|im_start|>", "<|im_sep|>", "<|im_end|>"});
  EXPECT_EQ(detectChatTemplate(phi4.get(), Architecture::phi3), ChatTemplate::none);
}

// Gemma 3's turns as its model card writes them: the system message opens
// the first user turn, the assistant is "model", each content trimmed.
TEST(ChatTemplate, Gemma) {
  EXPECT_EQ(chatText(renderChat(ChatTemplate::gemma, kSystemUser)),
            "<bos><start_of_turn>user\nYou are a helpful assistant.\n\nHello!<end_of_turn>\n"
            "<start_of_turn>model\n");
  EXPECT_EQ(chatText(renderChat(ChatTemplate::gemma, kTwoTurns)),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
            "Hello! How can I help?<end_of_turn>\n<start_of_turn>user\nTell me a joke."
            "<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(chatText(renderChat(ChatTemplate::gemma, {{"user", "  spaced \n"}})),
            "<bos><start_of_turn>user\nspaced<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_THROW(renderChat(ChatTemplate::gemma, {{"assistant", "Hi"}}), ApiError);
  EXPECT_THROW(renderChat(ChatTemplate::gemma, {{"user", "a"}, {"user", "b"}}), ApiError);
  // The same as Gemma 3's own Jinja template (tokenizer_config.json's)
  // renders in kvplan's Jinja.
  const std::string jinja = R"({{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
)";
  nlohmann::json added = nlohmann::json::array();
  for (auto [id, piece] : {std::pair{2, "<bos>"}, {3, "<start_of_turn>"}, {4, "<end_of_turn>"}})
    added.push_back({{"id", id}, {"content", piece}, {"special", true}, {"normalized", false}});
  auto tok = loadTokenizer(
      "hf-bpe", nlohmann::json{{"added_tokens", added},
                               {"pre_tokenizer", {{"type", "ByteLevel"}}},
                               {"model",
                                {{"type", "BPE"},
                                 {"vocab", {{"a", 0}, {"b", 1}, {"\u010a", 10}}},
                                 {"merges", nlohmann::json::array()}}}}
                    .dump());
  const ModelChatTemplate own(jinja, "gemma3.jinja", "<bos>", "<eos>", *tok);
  for (const auto &messages : {kSystemUser, kTwoTurns})
    EXPECT_EQ(chatText(own.render(messages, {}, nlohmann::ordered_json::object(), nullptr)),
              chatText(renderChat(ChatTemplate::gemma, messages)));
  EXPECT_EQ(detectChatTemplate(tok.get(), Architecture::gemma3), ChatTemplate::gemma);
  EXPECT_EQ(turnEnd(ChatTemplate::gemma, *tok).ids, std::vector<int32_t>{4});
}

TEST(ChatTemplate, Mistral) {
  EXPECT_EQ(chatText(renderChat(ChatTemplate::mistral, kTwoTurns)),
            "<s>[INST] Hi[/INST] Hello! How can I help?</s>[INST] Tell me a joke.[/INST]");
  // The system message goes with the last user message.
  std::vector<ChatMessage> m = kTwoTurns;
  m.insert(m.begin(), {"system", "Be funny."});
  EXPECT_EQ(chatText(renderChat(ChatTemplate::mistral, m)),
            "<s>[INST] Hi[/INST] Hello! How can I help?</s>[INST] Be funny.\n\nTell me a "
            "joke.[/INST]");
}

// Qwen3's template (its tokenizer_config.json, rendered with jinja2): an
// answer's thought is left out before the last user query, kept after it
// (from reasoning_content, or the <think> block its content begins with),
// and the conversation's last answer gets an empty one.
TEST(ChatTemplate, Qwen3ThoughtsAsItsTemplate) {
  EXPECT_EQ(chatText(renderChat(ChatTemplate::qwen3,
                                {{"user", "Hi"},
                                 {"assistant", "<think>\nA greeting.\n</think>\n\nHello! How can "
                                               "I help?"},
                                 {"user", "Tell me a joke."}})),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?"
            "<|im_end|>\n<|im_start|>user\nTell me a joke.<|im_end|>\n<|im_start|>assistant\n");
  ChatMessage past{"assistant", "Hello!"};
  past.reasoning = "A greeting.";
  EXPECT_EQ(chatText(renderChat(ChatTemplate::qwen3, {{"system", "Be brief."},
                                                      {"user", "Hi"},
                                                      past,
                                                      {"user", "Tell me a joke."}})),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nTell me a joke."
            "<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(chatText(renderChat(ChatTemplate::qwen3, {{"user", "Hi"}, {"assistant", "Hello"}})),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
            "Hello<|im_end|>\n<|im_start|>assistant\n");
  // After the last query (a user message of <tool_response>s is not one):
  // a thought given, one in the content, none, and tags in odd places.
  ChatMessage first{"assistant", "\n\nFirst."};
  first.reasoning = "\nthink one\n";
  EXPECT_EQ(chatText(renderChat(
                ChatTemplate::qwen3,
                {{"user", "Hi"},
                 first,
                 {"user", "<tool_response>\nok\n</tool_response>"},
                 {"assistant", "<think>\nthink two\n</think>\n\nSecond."},
                 {"assistant", "Third, no thought."},
                 {"assistant", "x<think>\n\na\n</think>b</think>\n\nc"}})),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nthink one\n"
            "</think>\n\nFirst.<|im_end|>\n<|im_start|>user\n<tool_response>\nok\n"
            "</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\nthink two\n</think>"
            "\n\nSecond.<|im_end|>\n<|im_start|>assistant\nThird, no thought.<|im_end|>\n"
            "<|im_start|>assistant\n<think>\na\n</think>\n\nc<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(noThinkingSuffix(ChatTemplate::qwen3), "<think>\n\n</think>\n\n");
  EXPECT_TRUE(chatTemplateThinks(ChatTemplate::qwen3));
  EXPECT_FALSE(chatTemplateOpensThought(ChatTemplate::qwen3));
  EXPECT_FALSE(chatTemplateThinks(ChatTemplate::chatml));
}

// DeepSeek-R1's template (llama.cpp's copy of DeepSeek-R1-Distill-Qwen-32B's,
// rendered with jinja2): BOS, the last system message, answers without
// their thoughts, and the prompt ends in an opened thought.
TEST(ChatTemplate, DeepSeekR1AsItsTemplate) {
  const std::string bos = "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>";
  const std::string eos = "<\uFF5Cend\u2581of\u2581sentence\uFF5C>";
  const std::string user = "<\uFF5CUser\uFF5C>", assistant = "<\uFF5CAssistant\uFF5C>";
  EXPECT_EQ(chatText(renderChat(ChatTemplate::deepseek_r1,
                                {{"system", "Be brief."},
                                 {"user", "Hi"},
                                 {"assistant", "<think>\nA greeting.\n</think>\n\nHello! How can "
                                               "I help?"},
                                 {"user", "Tell me a joke."}})),
            bos + "Be brief." + user + "Hi" + assistant + "\n\nHello! How can I help?" + eos +
                user + "Tell me a joke." + assistant + "<think>\n");
  EXPECT_EQ(chatText(renderChat(ChatTemplate::deepseek_r1, {{"system", "A"},
                                                            {"user", "Hi"},
                                                            {"system", "B"},
                                                            {"user", "x</think>y"}})),
            bos + "B" + user + "Hi" + user + "x</think>y" + assistant + "<think>\n");
  EXPECT_EQ(chatText(renderChat(ChatTemplate::deepseek_r1,
                                {{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}})),
            bos + user + "Hi" + assistant + "Hello" + eos + user + "Bye" + assistant +
                "<think>\n");
  EXPECT_TRUE(chatTemplateThinks(ChatTemplate::deepseek_r1));
  EXPECT_TRUE(chatTemplateOpensThought(ChatTemplate::deepseek_r1));
  EXPECT_EQ(noThinkingSuffix(ChatTemplate::deepseek_r1), "\n</think>\n\n");
  // Its tool format is not written: a clear 400.
  ChatMessage call{"assistant", ""};
  call.toolCalls = {{"c1", "f", "{}"}};
  try {
    renderChat(ChatTemplate::deepseek_r1, {{"user", "Hi"}, call});
    FAIL() << "no error";
  } catch (const ApiError &e) {
    EXPECT_EQ(e.param, "tools");
    EXPECT_NE(std::string(e.what()).find("deepseek-r1"), std::string::npos) << e.what();
  }
}

TEST(ChatTemplate, NoneIsAClear400) {
  try {
    renderChat(ChatTemplate::none, kSystemUser);
    FAIL() << "no error";
  } catch (const ApiError &e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, "messages");
    EXPECT_NE(std::string(e.what()).find("--chat-template"), std::string::npos);
  }
}

TEST(ChatTemplate, Names) {
  for (const char *name :
       {"llama2", "llama3", "chatml", "qwen3", "deepseek-r1", "mistral", "phi3", "gemma", "none"})
    EXPECT_EQ(chatTemplateName(*parseChatTemplate(name)), std::string(name));
  EXPECT_FALSE(parseChatTemplate("jinja"));
}

TEST(ChatTemplate, Llama3TokensAsMetaEncodesThem) {
  const std::string path = modelPath("llama3-tokenizer/tokenizer.json");
  REQUIRE_FILE(path);
  auto tok = loadTokenizerFile(path);
  EXPECT_EQ(detectChatTemplate(tok.get(), Architecture::llama), ChatTemplate::llama3);
  // meta-llama/llama3, llama/test_tokenizer.py, test_encode_dialog.
  const std::vector<ChatMessage> dialog = {{"system", "This is a test sentence."},
                                           {"user", "This is a response."}};
  EXPECT_EQ(tokenizeChat(*tok, renderChat(ChatTemplate::llama3, dialog)),
            (std::vector<int32_t>{128000, 128006, 9125,  128007, 271,   2028,  374,
                                  264,    1296,   11914, 13,     128009, 128006, 882,
                                  128007, 271,    2028,  374,    264,   2077,  13,
                                  128009, 128006, 78191, 128007, 271}));
  const TurnEnd end = turnEnd(ChatTemplate::llama3, *tok);
  EXPECT_EQ(end.ids, std::vector<int32_t>{128009});
  EXPECT_TRUE(end.strings.empty());
}

TEST(ChatTemplate, ChatMlTokensForQwen) {
  const std::string path = modelPath("qwen3-tokenizer/tokenizer.json");
  REQUIRE_FILE(path);
  auto tok = loadTokenizerFile(path);
  // Qwen3's vocabulary has <think> and </think>: its own template.
  EXPECT_EQ(detectChatTemplate(tok.get(), Architecture::qwen3), ChatTemplate::qwen3);
  // <|im_start|> user \n ... <|im_end|> \n <|im_start|> assistant \n
  const std::vector<int32_t> ids =
      tokenizeChat(*tok, renderChat(ChatTemplate::qwen3, {{"user", "Hi"}}));
  ASSERT_GE(ids.size(), 8u);
  EXPECT_EQ(ids[0], 151644);
  EXPECT_EQ(ids[1], 872);
  EXPECT_EQ(ids[2], 198);
  EXPECT_EQ(std::vector<int32_t>(ids.end() - 5, ids.end()),
            (std::vector<int32_t>{151645, 198, 151644, 77091, 198}));
  EXPECT_EQ(turnEnd(ChatTemplate::chatml, *tok).ids, std::vector<int32_t>{151645});
  EXPECT_EQ(turnEnd(ChatTemplate::qwen3, *tok).ids, std::vector<int32_t>{151645});
  // A thought, as the template writes the last answer back: <think> \n
  // ... </think> \n\n ("\n\n" is one token, 271).
  const std::vector<int32_t> last =
      tokenizeChat(*tok, renderChat(ChatTemplate::qwen3, {{"user", "Hi"}, {"assistant", "a"}}));
  const auto think = std::find(last.begin(), last.end(), 151667);
  ASSERT_LE(think + 4, last.end());
  EXPECT_EQ(std::vector<int32_t>(think, think + 4),
            (std::vector<int32_t>{151667, 271, 151668, 271}));
}

TEST(ChatTemplate, Llama2TokensWithSentencePiece) {
  const std::string path = modelPath("llama2-tokenizer/tokenizer.model");
  REQUIRE_FILE(path);
  auto tok = loadTokenizerFile(path);
  // Llama 2's markers are text: its vocabulary says nothing of chat.
  EXPECT_EQ(detectChatTemplate(tok.get(), Architecture::llama), ChatTemplate::none);
  EXPECT_EQ(detectChatTemplate(tok.get(), Architecture::mistral), ChatTemplate::mistral);
  EXPECT_EQ(tok->specialTokenId("<s>"), 1);
  EXPECT_EQ(tok->specialTokenId("[INST]"), -1);
  // "<s>[INST] Hello [/INST]": ▁[ INST ] ▁Hello ▁[ / INST ]
  EXPECT_EQ(tokenizeChat(*tok, renderChat(ChatTemplate::llama2, {{"user", "Hello"}})),
            (std::vector<int32_t>{1, 518, 25580, 29962, 15043, 518, 29914, 25580, 29962}));
  // The answer ends with EOS, which is a stop id already.
  EXPECT_TRUE(turnEnd(ChatTemplate::llama2, *tok).ids.empty());
}

TEST(ChatTemplate, MarkersTheVocabularyLacksAreText) {
  auto tok = makeByteTokenizer(300);
  EXPECT_EQ(detectChatTemplate(tok.get(), Architecture::llama), ChatTemplate::none);
  const std::vector<ChatPiece> p = renderChat(ChatTemplate::chatml, {{"user", "Hi"}});
  EXPECT_EQ(tokenizeChat(*tok, p), tok->encode(chatText(p), false));
  const TurnEnd end = turnEnd(ChatTemplate::chatml, *tok);
  EXPECT_TRUE(end.ids.empty());
  EXPECT_EQ(end.strings, std::vector<std::string>{"<|im_end|>"});
  // Llama 3 on the byte tokenizer: BOS is the tokenizer's.
  EXPECT_EQ(tokenizeChat(*tok, renderChat(ChatTemplate::llama3, {{"user", "Hi"}}))[0], 1);
}

TEST(OpenAiRequest, DefaultsAndFields) {
  ApiRequest r = parseCompletionRequest(R"({"prompt": "Hi"})");
  EXPECT_EQ(*r.promptText, "Hi");
  EXPECT_FALSE(r.maxTokens);
  EXPECT_EQ(r.sampling.temperature, 1.0);
  EXPECT_EQ(r.sampling.topP, 1.0);
  EXPECT_FALSE(r.seedGiven);
  EXPECT_FALSE(r.stream);
  r = parseCompletionRequest(
      R"({"prompt": [[1, 2, 3]], "max_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": -1,
          "seed": 3, "stop": "x", "stream": true, "stream_options": {"include_usage": true},
          "n": 1, "logprobs": null, "presence_penalty": 0, "user": "me"})");
  EXPECT_EQ(r.promptIds, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(*r.maxTokens, 7);
  EXPECT_EQ(r.sampling.topK, 0);
  EXPECT_EQ(r.sampling.seed, 3u);
  EXPECT_EQ(r.stop, std::vector<std::string>{"x"});
  EXPECT_TRUE(r.includeUsage);
  ApiRequest c = parseChatRequest(
      R"({"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"},
          {"type": "text", "text": "b"}]}, {"role": "user", "content": "c"}],
          "max_tokens": 5, "max_completion_tokens": 9})");
  EXPECT_EQ(c.messages[0].role, "system");
  EXPECT_EQ(c.messages[0].content, "ab");
  EXPECT_EQ(*c.maxTokens, 9);
  EXPECT_EQ(c.logprobs, -1);
  EXPECT_FALSE(c.messages[1].reasoning);
  // An answer sent back with its reasoning (vLLM's two names; null is none).
  const ApiRequest back = parseChatRequest(
      R"({"messages": [{"role": "user", "content": "a"},
          {"role": "assistant", "content": "b", "reasoning_content": "r"},
          {"role": "assistant", "content": "c", "reasoning": "s"},
          {"role": "assistant", "content": "d", "reasoning_content": null},
          {"role": "user", "content": "e", "reasoning_content": "ignored"}]})");
  EXPECT_EQ(back.messages[1].reasoning, std::optional<std::string>("r"));
  EXPECT_EQ(back.messages[2].reasoning, std::optional<std::string>("s"));
  EXPECT_FALSE(back.messages[3].reasoning);
  EXPECT_FALSE(back.messages[4].reasoning);
  try {
    parseChatRequest(R"({"messages": [{"role": "assistant", "content": "b",
                         "reasoning_content": 3}]})");
    FAIL() << "no error";
  } catch (const ApiError &e) {
    EXPECT_EQ(e.param, "messages[0].reasoning_content");
  }
  EXPECT_FALSE(r.sampling.changesRow()); // "presence_penalty": 0
  const ApiRequest pen = parseCompletionRequest(
      R"({"prompt": "a", "presence_penalty": -0.5, "frequency_penalty": 2,
          "repetition_penalty": 1.1})");
  EXPECT_EQ(pen.sampling.presencePenalty, -0.5);
  EXPECT_EQ(pen.sampling.frequencyPenalty, 2.0);
  EXPECT_EQ(pen.sampling.repetitionPenalty, 1.1);
  const ApiRequest bias =
      parseCompletionRequest(R"({"prompt": "a", "logit_bias": {"7": -100, "12": 2.5}})");
  std::vector<std::pair<int32_t, double>> biases = bias.sampling.logitBias;
  std::sort(biases.begin(), biases.end());
  EXPECT_EQ(biases, (std::vector<std::pair<int32_t, double>>{{7, -100.0}, {12, 2.5}}));
  EXPECT_EQ(r.logprobs, -1); // "logprobs": null
  EXPECT_EQ(parseCompletionRequest(R"({"prompt": "a", "logprobs": 0})").logprobs, 0);
  EXPECT_EQ(parseCompletionRequest(R"({"prompt": "a", "logprobs": 20})").logprobs, 20);
  EXPECT_EQ(parseCompletionRequest(R"({"prompt": "a", "logprobs": 20})").promptLogprobs, -1);
  const char *jsonMode = R"("response_format": {"type": "json_object"})";
  EXPECT_TRUE(parseCompletionRequest(std::string(R"({"prompt": "a", )") + jsonMode + "}")
                  .jsonObject);
  EXPECT_TRUE(parseChatRequest(std::string(R"({"messages": [{"role": "user"}], )") + jsonMode +
                               "}")
                  .jsonObject);
  EXPECT_FALSE(parseChatRequest(
                   R"({"messages": [{"role": "user"}], "response_format": {"type": "text"}})")
                   .jsonObject);
  const ApiRequest scored =
      parseCompletionRequest(R"({"prompt": "a", "logprobs": 3, "echo": true, "max_tokens": 0})");
  EXPECT_EQ(scored.promptLogprobs, 3);
  EXPECT_EQ(scored.maxTokens, std::optional<int64_t>(0));
  const char *chat = R"({"messages": [{"role": "user", "content": "c"}], "logprobs": )";
  EXPECT_EQ(parseChatRequest(std::string(chat) + "true}").logprobs, 0);
  EXPECT_EQ(parseChatRequest(std::string(chat) + "false}").logprobs, -1);
  EXPECT_EQ(parseChatRequest(std::string(chat) + "true, \"top_logprobs\": 4}").logprobs, 4);
}

TEST(OpenAiRequest, JsonSchemaKeepsItsPropertiesInTheOrderWritten) {
  // The body is parsed into sorted maps; the schema's properties are
  // generated in the order the client wrote them, not alphabetically.
  const ApiRequest r = parseChatRequest(
      R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type":
          "json_schema", "json_schema": {"name": "t", "schema": {"type": "object",
          "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "string"}}}}}})");
  ASSERT_TRUE(r.jsonObject && r.jsonSchema);
  const auto &root = r.jsonSchema->nodes()[r.jsonSchema->root()];
  ASSERT_EQ(root.properties.size(), 2u);
  EXPECT_EQ(root.properties[0].key, "zeta\"");
  EXPECT_EQ(root.properties[1].key, "alpha\"");
  // No schema: any object.
  const ApiRequest any = parseCompletionRequest(
      R"({"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {}}})");
  ASSERT_TRUE(any.jsonSchema);
  EXPECT_EQ(any.jsonSchema->root(), JsonSchema::kAnyObject);
}

TEST(OpenAiRequest, ErrorsNameTheField) {
  auto param = [](const std::string &body, bool chat = false) {
    try {
      chat ? parseChatRequest(body) : parseCompletionRequest(body);
    } catch (const ApiError &e) {
      EXPECT_EQ(e.status, 400);
      return e.param;
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(param(R"({"prompt": ["a", "b"]})"), "prompt");
  EXPECT_EQ(param(R"({"prompt": []})"), "prompt");
  EXPECT_EQ(param(R"({"prompt": [-1]})"), "prompt");
  EXPECT_EQ(param(R"({"prompt": "a", "seed": "x"})"), "seed");
  EXPECT_EQ(param(R"({"prompt": "a", "frequency_penalty": 2.5})"), "frequency_penalty");
  EXPECT_EQ(param(R"({"prompt": "a", "presence_penalty": -2.1})"), "presence_penalty");
  EXPECT_EQ(param(R"({"prompt": "a", "presence_penalty": "high"})"), "presence_penalty");
  EXPECT_EQ(param(R"({"prompt": "a", "repetition_penalty": 0})"), "repetition_penalty");
  EXPECT_EQ(param(R"({"prompt": "a", "logit_bias": {"x": 1}})"), "logit_bias");
  EXPECT_EQ(param(R"({"prompt": "a", "logit_bias": {"-3": 1}})"), "logit_bias");
  EXPECT_EQ(param(R"({"prompt": "a", "logit_bias": {"3": 101}})"), "logit_bias");
  EXPECT_EQ(param(R"({"prompt": "a", "logit_bias": [1]})"), "logit_bias");
  EXPECT_EQ(param(R"({"prompt": "a", "best_of": 2})"), "best_of");
  EXPECT_EQ(param(R"({"prompt": "a", "stream_options": {"include_usage": true}})"),
            "stream_options");
  EXPECT_EQ(param(R"({"prompt": "a", "stop": ""})"), "stop");
  EXPECT_EQ(param(R"({"prompt": "a", "logprobs": 21})"), "logprobs");
  EXPECT_EQ(param(R"({"prompt": "a", "logprobs": -1})"), "logprobs");
  EXPECT_EQ(param(R"({"prompt": "a", "logprobs": true})"), "logprobs");
  EXPECT_EQ(param(R"({"prompt": "a", "logprobs": 1, "echo": true})"), "(no error)");
  // max_tokens 0 asks for the prompt's log-probabilities alone: echo and
  // logprobs both.
  EXPECT_EQ(param(R"({"prompt": "a", "logprobs": 1, "echo": true, "max_tokens": 0})"),
            "(no error)");
  EXPECT_EQ(param(R"({"prompt": "a", "echo": true, "max_tokens": 0})"), "max_tokens");
  EXPECT_EQ(param(R"({"prompt": "a", "response_format": {"type": "json_schema"}})"),
            "response_format");
  EXPECT_EQ(param(R"({"prompt": "a", "response_format": {"type": "json_schema",
                      "json_schema": {"name": "t", "schema": {"type": "object"}}}})"),
            "(no error)");
  EXPECT_EQ(param(R"({"prompt": "a", "response_format": {"type": "json_schema",
                      "json_schema": {"name": 3}}})"),
            "response_format");
  EXPECT_EQ(param(R"({"prompt": "a", "response_format": {"type": "json_schema",
                      "json_schema": {"schema": {"type": "string"}}}})"),
            "response_format");
  EXPECT_EQ(param(R"({"prompt": "a", "response_format": {"type": "json_schema",
                      "json_schema": {"schema": {"properties": {"a": {"minimum": "1"}}}}}})"),
            "response_format");
  EXPECT_EQ(param(R"({"prompt": "a", "response_format": {"type": 3}})"), "response_format");
  EXPECT_EQ(param(R"({"prompt": "a", "response_format": "json"})"), "response_format");
  EXPECT_EQ(param(R"({"prompt": "a", "logprobs": 1, "max_tokens": 0})"), "max_tokens");
  EXPECT_EQ(param(R"({"messages": [{"role": "user"}], "logprobs": 1})", true), "logprobs");
  EXPECT_EQ(param(R"({"messages": [{"role": "user"}], "top_logprobs": 2})", true),
            "top_logprobs");
  EXPECT_EQ(param(R"({"messages": [{"role": "user"}], "logprobs": true, "top_logprobs": 21})",
                  true),
            "top_logprobs");
  EXPECT_EQ(param(R"({"messages": [{"content": "x"}]})", true), "messages[0].role");
  EXPECT_EQ(param(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
                  true),
            "messages[0].content");
  EXPECT_EQ(param(R"({"messages": "hi"})", true), "messages");
}

// A model's own template: its text split at the vocabulary's special tokens
// (<think> among Qwen3's added ones), the longest first; a prompt that ends
// in <think> opens the thought, closed with thinking off; the template's
// raise_exception is a 400 naming messages.
TEST(ModelChatTemplate, SplitsAtSpecialTokensAndOpensTheThought) {
  const std::string path = modelPath("qwen3-tokenizer/tokenizer.json");
  REQUIRE_FILE(path);
  auto tok = loadTokenizerFile(path);
  const ModelChatTemplate t(
      "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system, "
      "please') }}{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
      "{% endfor %}<|im_start|>assistant\n{{ '<think>\\n' }}",
      "test.jinja", "", "", *tok);
  bool opens = false;
  const std::vector<ChatPiece> pieces =
      t.render({{"user", "a<|im_end|b <think>"}}, {}, nlohmann::ordered_json::object(), &opens);
  EXPECT_TRUE(opens);
  std::vector<std::string> seen;
  for (const ChatPiece &p : pieces)
    seen.push_back((p.kind == ChatPiece::marker ? "M:" : "T:") + p.value);
  EXPECT_EQ(seen, (std::vector<std::string>{"M:<|im_start|>", "T:user\na<|im_end|b ",
                                            "M:<think>", "M:<|im_end|>", "T:\n",
                                            "M:<|im_start|>", "T:assistant\n", "M:<think>",
                                            "T:\n"}));
  const std::vector<ChatPiece> off =
      t.render({{"user", "Hi"}}, {}, {{"enable_thinking", false}}, &opens);
  EXPECT_FALSE(opens);
  EXPECT_EQ(chatText(off),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  try {
    t.render({{"system", "x"}, {"user", "Hi"}}, {}, nlohmann::ordered_json::object(), nullptr);
    ADD_FAILURE() << "raise_exception did not throw";
  } catch (const ApiError &e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, "messages");
    EXPECT_STREQ(e.what(), "no system, please");
  }
  // BOS and EOS the template's source does not give are the tokenizer's
  // (a tokenizer.json alone ends text with <|endoftext|>).
  const ModelChatTemplate eos("{{ eos_token }}", "eos.jinja", "", "", *tok);
  EXPECT_EQ(chatText(eos.render({{"user", "Hi"}}, {}, nlohmann::ordered_json::object(), nullptr)),
            "<|endoftext|>");
}

// A body nesting arrays and objects past 128 levels is a 400 before any
// reader walks it (a tool's parameters 50,000 deep overflowed the stack);
// brackets inside strings do not count.
TEST(OpenAiRequest, DeepNestingIsRefused) {
  const std::string deep = R"({"messages": [{"role": "user", "content": "hi"}], "tools": )" +
                           std::string(200, '[') + std::string(200, ']') + "}";
  try {
    parseChatRequest(deep);
    ADD_FAILURE() << "a body 201 levels deep was accepted";
  } catch (const ApiError &e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_STREQ(e.what(), "the body nests arrays and objects more than 128 deep");
  }
  const std::string text = R"({"messages": [{"role": "user", "content": ")" +
                           std::string(500, '[') + R"(\"{"}]})";
  EXPECT_EQ(parseChatRequest(text).messages.at(0).content, std::string(500, '[') + "\"{");
}

// Where the prompt ends (add_generation_prompt, continue_final_message), as
// each family's own Jinja template renders with add_generation_prompt false
// and transformers then cuts it after the last message's content.
TEST(ChatTemplate, WhereThePromptEnds) {
  const std::vector<ChatMessage> begun = {{"user", "Tell me a joke."},
                                          {"assistant", "Why did the "}};
  const std::string llama3 = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                             "Tell me a joke.<|eot_id|><|start_header_id|>assistant"
                             "<|end_header_id|>\n\nWhy did the";
  EXPECT_EQ(chatText(renderChat(ChatTemplate::llama3, begun, {}, ChatEnd::afterLastMessage)),
            llama3 + "<|eot_id|>");
  // Llama 3's template trims the content: the cut finds it trimmed.
  bool opens = true;
  EXPECT_EQ(chatText(renderChat(ChatTemplate::llama3, begun, {}, ChatEnd::continueLastMessage,
                                &opens)),
            llama3);
  EXPECT_FALSE(opens);
  EXPECT_EQ(chatText(renderChat(ChatTemplate::chatml, kSystemUser, {}, ChatEnd::afterLastMessage)),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHello!<|im_end|>\n");
  EXPECT_EQ(chatText(renderChat(ChatTemplate::llama2, {{"user", "Hi"}, {"assistant", "Hello"}},
                                {}, ChatEnd::continueLastMessage)),
            "<s>[INST] Hi [/INST] Hello");
  // Qwen3 writes the last answer's (empty) thought before it.
  EXPECT_EQ(chatText(renderChat(ChatTemplate::qwen3, {{"user", "Hi"}, {"assistant", "Hello"}}, {},
                                ChatEnd::continueLastMessage)),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello");
  // An answer begun inside its thought goes on inside it.
  const std::string bos = "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>";
  const std::string user = "<\uFF5CUser\uFF5C>", assistant = "<\uFF5CAssistant\uFF5C>";
  EXPECT_EQ(chatText(renderChat(ChatTemplate::deepseek_r1,
                                {{"user", "Hi"}, {"assistant", "<think>\nThe user"}}, {},
                                ChatEnd::continueLastMessage, &opens)),
            bos + user + "Hi" + assistant + "<think>\nThe user");
  EXPECT_TRUE(opens);
  EXPECT_EQ(chatText(renderChat(ChatTemplate::deepseek_r1, {{"user", "Hi"}}, {},
                                ChatEnd::afterLastMessage)),
            bos + user + "Hi");
  // Nothing to continue, or content the template does not write as given
  // (DeepSeek-R1 leaves out an answer's thought): a 400 naming the field.
  for (const std::vector<ChatMessage> &m : std::vector<std::vector<ChatMessage>>{
           {{"user", "Hi"}, {"assistant", " \n"}},
           {{"user", "Hi"}, {"assistant", "<think>a</think>The answer"}}}) {
    try {
      renderChat(ChatTemplate::deepseek_r1, m, {}, ChatEnd::continueLastMessage);
      ADD_FAILURE() << m.back().content;
    } catch (const ApiError &e) {
      EXPECT_EQ(e.param, "continue_final_message") << e.what();
    }
  }
  EXPECT_EQ(continueCut("abcXYZabc", "abc"), 9u);
  EXPECT_EQ(continueCut("x Hi y", " Hi\n"), 4u);
  EXPECT_EQ(continueCut("x Hi y", "Bye"), std::string::npos);
  EXPECT_EQ(continueCut("x Hi y", ""), std::string::npos);
}

TEST(ModelChatTemplate, WhereThePromptEnds) {
  const std::string path = modelPath("qwen3-tokenizer/tokenizer.json");
  REQUIRE_FILE(path);
  auto tok = loadTokenizerFile(path);
  const ModelChatTemplate t("{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</{{ "
                            "m.role }}>{% endfor %}{% if add_generation_prompt %}<assistant>{% "
                            "endif %}",
                            "ends.jinja", "", "", *tok);
  const nlohmann::ordered_json none = nlohmann::ordered_json::object();
  EXPECT_EQ(chatText(t.render({{"user", "Hi"}}, {}, none, nullptr)), "<user>Hi</user><assistant>");
  EXPECT_EQ(chatText(t.render({{"user", "Hi"}}, {}, none, nullptr, ChatEnd::afterLastMessage)),
            "<user>Hi</user>");
  bool opens = true;
  EXPECT_EQ(chatText(t.render({{"user", "Hi"}, {"assistant", "Sure: "}}, {}, none, &opens,
                              ChatEnd::continueLastMessage)),
            "<user>Hi</user><assistant>Sure:");
  EXPECT_FALSE(opens);
  EXPECT_EQ(chatText(t.render({{"user", "Hi"}, {"assistant", "<think>\nhm"}}, {}, none, &opens,
                              ChatEnd::continueLastMessage)),
            "<user>Hi</user><assistant><think>\nhm");
  EXPECT_TRUE(opens);
  const ModelChatTemplate upper("{{ messages[-1].content | upper }}", "upper.jinja", "", "", *tok);
  try {
    upper.render({{"assistant", "abc"}}, {}, none, nullptr, ChatEnd::continueLastMessage);
    ADD_FAILURE() << "no error";
  } catch (const ApiError &e) {
    EXPECT_EQ(e.param, "continue_final_message");
    EXPECT_NE(std::string(e.what()).find("did not write the last message's content"),
              std::string::npos)
        << e.what();
  }
}

TEST(OpenAiRequest, WhereThePromptEnds) {
  const std::string m = R"("messages": [{"role": "user", "content": "Hi"}])";
  EXPECT_EQ(parseChatRequest("{" + m + "}").chatEnd, ChatEnd::generationPrompt);
  EXPECT_EQ(parseChatRequest("{" + m + R"(, "add_generation_prompt": false})").chatEnd,
            ChatEnd::afterLastMessage);
  EXPECT_EQ(parseChatRequest("{" + m + R"(, "continue_final_message": true})").chatEnd,
            ChatEnd::continueLastMessage);
  EXPECT_EQ(parseChatRequest("{" + m +
                             R"(, "continue_final_message": true, "add_generation_prompt": false})")
                .chatEnd,
            ChatEnd::continueLastMessage);
  EXPECT_EQ(parseTokenizeRequest("{" + m + R"(, "add_generation_prompt": false})").chatEnd,
            ChatEnd::afterLastMessage);
  const std::string tools =
      R"(, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}])";
  for (const auto &[body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"(, "continue_final_message": true, "add_generation_prompt": true})",
            "continue_final_message"},
           {R"(, "continue_final_message": 1})", "continue_final_message"},
           {tools + R"(, "tool_choice": "required", "continue_final_message": true})",
            "tool_choice"},
           {tools + R"(, "tool_choice": "required", "add_generation_prompt": false})",
            "tool_choice"}}) {
    try {
      parseChatRequest("{" + m + body);
      ADD_FAILURE() << body;
    } catch (const ApiError &e) {
      EXPECT_EQ(e.param, param) << body << ": " << e.what();
    }
  }
}
