// What the tools do with a parsed file, for the fuzz targets: every weight a
// model declares is looked up and its first row converted (as packing does),
// a tokenizer encodes and decodes text. A fuzzed file must survive its use,
// not only its parsing.
#pragma once

#include "formats/Tokenizer.h"
#include "formats/WeightFormats.h"
#include "spec/ModelSpec.h"

#include <string_view>
#include <vector>

namespace kvplan::fuzz {

/// Looks up each tensor of `model` in `src` and converts its first row to
/// f32. Throws InputError at the first one the file lacks or gets wrong.
inline void readEveryWeight(const WeightSource &src, const ModelSpec &model) {
  for (const WeightDecl &w : weightTable(model)) {
    SourceTensor t = src.tensor(w.name, w.shape);
    if (t.shape.empty() || sourceElements(t) == 0)
      continue;
    std::vector<float> row(size_t(t.shape.back()));
    sourceRowsToF32(t, 0, 1, row.data());
  }
}

/// Encodes a fixed text and `text`, decodes the ids back (whole and one id
/// at a time, as streaming does) and every id below 512.
inline void useTokenizer(const Tokenizer &tok, std::string_view text) {
  for (std::string_view s : {std::string_view("Hello, world! \xc3\xa9t\xc3\xa9 <s> 123"), text}) {
    std::vector<int32_t> ids = tok.encode(s, true);
    tok.decode(ids);
    StreamDecoder stream(tok);
    for (int32_t id : ids)
      stream.push(id);
    stream.flush();
  }
  std::vector<int32_t> all;
  for (int32_t id = 0; id < tok.vocabSize() && id < 512; ++id)
    all.push_back(id);
  tok.decode(all);
  tok.eosIds();
  tok.specialTokenId("<|eot_id|>");
}

} // namespace kvplan::fuzz
