// ggml's quantized GGUF types: every tensor of the shared q256-*.gguf files
// dequantizes to exactly what llama.cpp's reference dequantizers (gguf-py)
// give, as recorded in q256-dequant-reference.json (SHA-256 of the f32 bytes
// and the first values), and the lossless int4/int8 repacking reproduces
// those values bit for bit.
//
// This file is compiled with -ffp-contract=off: `code * scale + min` below
// must round the product and the sum separately, as the header promises.
#include "formats/GgmlQuants.h"
#include "formats/Gguf.h"
#include "support/Half.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace kvplan;

namespace {

const fs::path kDir = fs::path(KVPLAN_SHARED_DIR) / "models" / "gguf-quants";

#define REQUIRE_QUANT_DATA()                                                                \
  do {                                                                                     \
    if (!fs::exists(kDir / "q256-dequant-reference.json"))                                 \
      GTEST_SKIP() << "no " << kDir.string()                                               \
                   << " (set KVPLAN_SHARED_DIR to the folder holding models/)";            \
  } while (0)

nlohmann::json reference() {
  std::ifstream in(kDir / "q256-dequant-reference.json");
  return nlohmann::json::parse(in);
}

int64_t elementsOf(const GgufFile::Tensor &t) {
  int64_t n = 1;
  for (int64_t d : t.dims) n *= d;
  return n;
}

/// The tensor as f32, plain types converted exactly, quantized ones
/// dequantized.
std::vector<float> toF32(const GgufFile::Tensor &t) {
  const int64_t n = elementsOf(t);
  std::vector<float> out(size_t(n), 0.0f);
  if (t.quant != QuantType::none) {
    dequantize(t.quant, t.data, out.data(), n);
    return out;
  }
  DType from = t.ggmlType == GgufFile::kF32   ? DType::f32
               : t.ggmlType == GgufFile::kF16 ? DType::f16
                                              : DType::bf16;
  EXPECT_TRUE(t.ggmlType == GgufFile::kF32 || t.ggmlType == GgufFile::kF16 ||
              t.ggmlType == GgufFile::kBF16)
      << t.name;
  convertElements(t.data, from, out.data(), DType::f32, n);
  return out;
}

std::string sha256Hex(const void *data, size_t bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EXPECT_EQ(EVP_Digest(data, bytes, digest, &len, EVP_sha256(), nullptr), 1);
  std::string hex;
  static const char *digits = "0123456789abcdef";
  for (unsigned int i = 0; i < len; ++i) {
    hex += digits[digest[i] >> 4];
    hex += digits[digest[i] & 15];
  }
  return hex;
}

std::string typeName(const GgufFile::Tensor &t) {
  if (t.quant != QuantType::none) return quantTypeName(t.quant);
  switch (t.ggmlType) {
  case GgufFile::kF32: return "F32";
  case GgufFile::kF16: return "F16";
  case GgufFile::kBF16: return "BF16";
  default: return "ggml type " + std::to_string(t.ggmlType);
  }
}

uint32_t bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

/// Bitwise equality, except that +0 and -0 are equal: for a Q4_0 block
/// whose scale d is zero, the reference's d * (q - 8) gives -0 for codes
/// below 8, which no single (scale, min) pair reproduces; the value is the
/// same.
bool sameValue(float a, float b) { return bits(a) == bits(b) || (a == 0.0f && b == 0.0f); }

/// Calls fn(file name, tensor) for every tensor of every q256 file.
template <typename Fn> void forEachTensor(Fn fn) {
  for (const auto &entry : fs::directory_iterator(kDir)) {
    if (entry.path().extension() != ".gguf") continue;
    GgufFile g = GgufFile::open(entry.path().string());
    for (const GgufFile::Tensor &t : g.tensors())
      fn(entry.path().filename().string(), t);
  }
}

} // namespace

TEST(GgmlQuants, TypeNumbersAndBlockSizesAreGgmls) {
  struct Row { uint32_t ggml; QuantType t; const char *name; int64_t elems, bytes; };
  const Row rows[] = {{2, QuantType::q4_0, "Q4_0", 32, 18},   {3, QuantType::q4_1, "Q4_1", 32, 20},
                      {6, QuantType::q5_0, "Q5_0", 32, 22},   {7, QuantType::q5_1, "Q5_1", 32, 24},
                      {8, QuantType::q8_0, "Q8_0", 32, 34},   {12, QuantType::q4_k, "Q4_K", 256, 144},
                      {13, QuantType::q5_k, "Q5_K", 256, 176},
                      {14, QuantType::q6_k, "Q6_K", 256, 210},
                      {39, QuantType::mxfp4, "MXFP4", 32, 17}};
  for (const Row &r : rows) {
    EXPECT_EQ(quantTypeOfGgml(r.ggml), r.t) << r.name;
    EXPECT_STREQ(quantTypeName(r.t), r.name);
    EXPECT_EQ(quantBlockElements(r.t), r.elems) << r.name;
    EXPECT_EQ(quantBlockBytes(r.t), r.bytes) << r.name;
  }
  for (uint32_t other : {0u, 1u, 9u, 10u, 11u, 15u, 16u, 23u, 30u, 1000u})
    EXPECT_FALSE(quantTypeOfGgml(other).has_value()) << other;
}

TEST(GgmlQuants, HandBuiltBlocksDequantize) {
  // Q8_0: d = 0.5 (f16 0x3800), codes -3 and 127.
  uint8_t q8[34] = {0x00, 0x38};
  q8[2] = uint8_t(int8_t(-3));
  q8[3] = 127;
  float y[32];
  dequantize(QuantType::q8_0, q8, y, 32);
  EXPECT_EQ(y[0], -1.5f);
  EXPECT_EQ(y[1], 63.5f);
  EXPECT_EQ(y[2], 0.0f);
  // Q4_1: d = 2 (0x4000), m = -1 (0xbc00); byte 0 = 0x5a: element 0 has
  // code 10, element 16 code 5.
  uint8_t q41[20] = {0x00, 0x40, 0x00, 0xbc, 0x5a};
  dequantize(QuantType::q4_1, q41, y, 32);
  EXPECT_EQ(y[0], 19.0f);
  EXPECT_EQ(y[16], 9.0f);
  EXPECT_EQ(y[1], -1.0f);
  EXPECT_THROW(dequantize(QuantType::q4_1, q41, y, 31), std::invalid_argument);
}

// MXFP4 (the OCP microscaling format gpt-oss's experts use): each block of
// 32 is an E8M0 scale 2^(e - 127) and 32 E2M1 codes (sign, 2 exponent bits,
// 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives), stored
// as ggml stores them: the scale byte, then element j in the low nibble of
// byte 1 + j and element 16 + j in the high one. The values below are the
// format's, computed here from its definition.
TEST(GgmlQuants, Mxfp4BlocksAreTheOcpFormatsValues) {
  const double e2m1[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
  for (int e : {0, 1, 2, 120, 127, 130, 254}) {
    SCOPED_TRACE("e = " + std::to_string(e));
    uint8_t block[17] = {uint8_t(e)};
    for (int j = 0; j < 16; ++j) block[1 + j] = uint8_t(j | ((15 - j) << 4));
    float y[32];
    dequantize(QuantType::mxfp4, block, y, 32);
    for (int i = 0; i < 32; ++i) {
      const int code = i < 16 ? i : 15 - (i - 16);
      // As an f32: exact, or past its range (e 254's 4 x 2^127) infinite.
      EXPECT_EQ(y[i], float(std::ldexp(e2m1[code], e - 127))) << i;
    }
    // int8 holds it exactly: the doubled value and a power-of-two scale.
    int8_t codes[32];
    float scale;
    ASSERT_TRUE(int8Groups(QuantType::mxfp4, block, 32, codes, &scale));
    EXPECT_EQ(double(scale), std::ldexp(1.0, e - 128));
    for (int i = 0; i < 32; ++i) {
      EXPECT_EQ(bits(float(codes[i]) * scale), bits(y[i])) << i;
      EXPECT_LE(std::abs(int(codes[i])), 12) << i;
    }
  }
}

TEST(GgmlQuants, EveryQ256TensorMatchesTheReferenceHash) {
  REQUIRE_QUANT_DATA();
  const nlohmann::json ref = reference();
  int checked = 0, quantized = 0;
  for (const auto &[file, tensors] : ref.items()) {
    GgufFile g = GgufFile::open((kDir / file).string());
    EXPECT_EQ(g.tensors().size(), tensors.size()) << file;
    for (const auto &[name, r] : tensors.items()) {
      const GgufFile::Tensor *t = g.tensor(name);
      ASSERT_NE(t, nullptr) << file << " " << name;
      EXPECT_EQ(typeName(*t), r["type"].get<std::string>()) << file << " " << name;
      EXPECT_EQ(t->dims, r["shape"].get<std::vector<int64_t>>()) << file << " " << name;
      std::vector<float> v = toF32(*t);
      ASSERT_EQ(int64_t(v.size()), r["elements"].get<int64_t>()) << file << " " << name;
      EXPECT_EQ(sha256Hex(v.data(), v.size() * sizeof(float)), r["sha256_f32"].get<std::string>())
          << file << " " << name << " (" << typeName(*t) << ")";
      const std::vector<double> first8 = r["first8"].get<std::vector<double>>();
      for (size_t i = 0; i < first8.size(); ++i)
        EXPECT_EQ(bits(v[i]), bits(float(first8[i]))) << file << " " << name << " [" << i << "]";
      ++checked;
      quantized += t->quant != QuantType::none;
    }
  }
  // Every file and the types the brief names are covered.
  EXPECT_EQ(ref.size(), 8u);
  EXPECT_GT(quantized, 100);
  EXPECT_GT(checked, quantized);
}

TEST(GgmlQuants, Int4GroupsReproduceDequantize) {
  REQUIRE_QUANT_DATA();
  int tensors = 0;
  forEachTensor([&](const std::string &file, const GgufFile::Tensor &t) {
    const bool int4 = t.quant == QuantType::q4_0 || t.quant == QuantType::q4_1 ||
                      t.quant == QuantType::q4_k;
    if (t.quant == QuantType::none) return;
    const int64_t n = elementsOf(t);
    std::vector<uint8_t> codes(size_t(n), 0xff);
    std::vector<float> scales(size_t(n / 32)), mins(size_t(n / 32));
    ASSERT_EQ(int4Groups(t.quant, t.data, n, codes.data(), scales.data(), mins.data()), int4)
        << file << " " << t.name << " " << quantTypeName(t.quant);
    if (!int4) return;
    std::vector<float> want = toF32(t);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_LE(codes[size_t(i)], 15) << file << " " << t.name << " [" << i << "]";
      const float product = float(codes[size_t(i)]) * scales[size_t(i / 32)];
      const float value = product + mins[size_t(i / 32)];
      ASSERT_TRUE(sameValue(value, want[size_t(i)]))
          << file << " " << t.name << " [" << i << "]: " << value << " vs " << want[size_t(i)];
    }
    ++tensors;
  });
  EXPECT_GT(tensors, 20); // the Q4_0, Q4_1 and Q4_K_M files' matrices
}

TEST(GgmlQuants, Int8GroupsReproduceDequantize) {
  REQUIRE_QUANT_DATA();
  int tensors = 0;
  forEachTensor([&](const std::string &file, const GgufFile::Tensor &t) {
    const bool int8 = t.quant == QuantType::q8_0 || t.quant == QuantType::q5_0;
    if (t.quant == QuantType::none) return;
    const int64_t n = elementsOf(t);
    std::vector<int8_t> codes(static_cast<size_t>(n));
    std::vector<float> scales(size_t(n / 32));
    ASSERT_EQ(int8Groups(t.quant, t.data, n, codes.data(), scales.data()), int8)
        << file << " " << t.name << " " << quantTypeName(t.quant);
    if (!int8) return;
    std::vector<float> want = toF32(t);
    for (int64_t i = 0; i < n; ++i) {
      const float value = float(codes[size_t(i)]) * scales[size_t(i / 32)];
      ASSERT_EQ(bits(value), bits(want[size_t(i)]))
          << file << " " << t.name << " [" << i << "]: " << value << " vs " << want[size_t(i)];
    }
    ++tensors;
  });
  EXPECT_GT(tensors, 20); // the Q8_0 and Q5_0 files' matrices
}

TEST(GgmlQuants, RepackingRefusesOtherTypes) {
  std::vector<uint8_t> blocks(size_t(quantBlockBytes(QuantType::q6_k)), 0);
  uint8_t c4[256];
  int8_t c8[256];
  float s[8], m[8];
  for (QuantType t : {QuantType::q5_0, QuantType::q5_1, QuantType::q8_0, QuantType::q5_k,
                      QuantType::q6_k, QuantType::none})
    EXPECT_FALSE(int4Groups(t, blocks.data(), quantBlockElements(t), c4, s, m))
        << quantTypeName(t);
  for (QuantType t : {QuantType::q4_0, QuantType::q4_1, QuantType::q5_1, QuantType::q4_k,
                      QuantType::q5_k, QuantType::q6_k, QuantType::none})
    EXPECT_FALSE(int8Groups(t, blocks.data(), quantBlockElements(t), c8, s)) << quantTypeName(t);
}
