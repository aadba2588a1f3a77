// safetensors: round trips, slices, and hostile files. The fuzz cases mutate a valid file's header
// and body in hundreds of ways; every one must be rejected with an error (or, for mutations that
// leave a valid file, read within bounds) and never crash. Run once under AddressSanitizer too
// (docs/interop.md).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "io/safetensors.h"
#include "tests/helpers.h"

namespace lethe {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::pair<std::string, at::Tensor>> sample_tensors() {
  return {{"a.weight", at::arange(24, at::kFloat).view({4, 6})},
          {"b.bias", at::arange(5, at::kFloat).to(at::kBFloat16)},
          {"c", at::arange(12, at::kFloat).view({2, 3, 2}).to(at::kHalf)},
          {"empty", at::empty({0, 3}, at::kFloat)}};
}

TEST(Safetensors, RoundTripsDtypesShapesAndMetadata) {
  const std::string path = test::scratch_dir("st") + "/m.safetensors";
  ASSERT_TRUE(write_safetensors(path, sample_tensors(), {{"format", "pt"}}).is_ok());
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().message();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->entries().size(), 4u);
  for (const auto& [name, t] : sample_tensors()) {
    const SafetensorsEntry* e = f->find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->dtype, t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(f->read(*e), t)) << name;
  }
  // The header length is 8-byte aligned, as the reference implementation writes it.
  EXPECT_EQ(slurp(path).size() % 8, (4 * 24 + 2 * 5 + 2 * 12) % 8);
}

TEST(Safetensors, ReadsSlicesAlongAnyDim) {
  const std::string path = test::scratch_dir("st") + "/m.safetensors";
  ASSERT_TRUE(write_safetensors(path, sample_tensors()).is_ok());
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.is_ok());
  at::Tensor a = at::arange(24, at::kFloat).view({4, 6});
  EXPECT_TRUE(at::equal(f->read(*f->find("a.weight"), 0, 2, 2), a.narrow(0, 2, 2)));
  EXPECT_TRUE(at::equal(f->read(*f->find("a.weight"), 1, 3, 3), a.narrow(1, 3, 3)));
  at::Tensor c = at::arange(12, at::kFloat).view({2, 3, 2}).to(at::kHalf);
  EXPECT_TRUE(at::equal(f->read(*f->find("c"), 1, 1, 2), c.narrow(1, 1, 2)));
}

// A header as raw JSON in front of `data`.
std::string file_with_header(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

TEST(Safetensors, RejectsEachKindOfMalformedFile) {
  const std::string dir = test::scratch_dir("st");
  const std::string d16(16, '\1');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "too short"},
      {file_with_header("{", d16), "not a JSON object"},
      {file_with_header("[1,2]", d16), "not a JSON object"},
      {file_with_header(R"({"t":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", d16), "not supported"},
      {file_with_header(R"({"t":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", d16), "not a non-negative"},
      {file_with_header(R"({"t":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})", d16), "needs 20"},
      {file_with_header(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,17]}})", d16), "fall outside"},
      {file_with_header(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[8,4]}})", d16), "fall outside"},
      {file_with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d16), "cover 8 of the 16"},
      {file_with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"u":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", d16), "overlaps"},
      {file_with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", d16), "a gap"},
      {file_with_header(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}})", d16), "absurdly large"},
      {file_with_header(R"({"t":{"dtype":"F32","shape":[4]}})", d16), "data_offsets"},
      {file_with_header(R"({"__metadata__":{"k":1}})", ""), "not a string"},
      {std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "100 MB bound"},
      {std::string("\x00\x10\x00\x00\x00\x00\x00\x00", 8) + "{}", "past the end"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = dir + "/bad" + std::to_string(i) + ".safetensors";
    spit(path, cases[i].first);
    auto f = SafetensorsFile::open(path);
    ASSERT_FALSE(f.is_ok()) << "case " << i;
    EXPECT_NE(f.status().message().find(cases[i].second), std::string::npos) << "case " << i << ": " << f.status().message();
    EXPECT_NE(f.status().message().find(path), std::string::npos) << "the error names the file";
  }
}

// Hundreds of mutations of a valid file: truncations, byte flips in the header and its length,
// and rewritten numbers in the header (offsets, shapes, dtypes). Either the file is rejected, or
// it is valid and every tensor reads within bounds (ASan would see an out-of-bounds read).
TEST(Safetensors, FuzzedFilesAreRejectedOrReadSafely) {
  const std::string dir = test::scratch_dir("st");
  const std::string good_path = dir + "/good.safetensors";
  ASSERT_TRUE(write_safetensors(good_path, sample_tensors()).is_ok());
  const std::string good = slurp(good_path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(good[i]);
  std::mt19937_64 rng(1234);
  std::vector<std::string> mutants;
  for (size_t cut = 0; cut < good.size(); cut += 7) mutants.push_back(good.substr(0, cut));
  for (int i = 0; i < 200; ++i) {
    std::string m = good;
    const size_t at = rng() % (8 + header_len);
    m[at] = static_cast<char>(rng() & 0xff);
    mutants.push_back(m);
  }
  const std::string header = good.substr(8, header_len), data = good.substr(8 + header_len);
  const std::vector<std::string> swaps = {"0", "1", "4", "96", "97", "1000000", "18446744073709551615", "-1", "1e3",
                                          "\"F32\"", "\"I64\"", "[]", "null", "{}"};
  for (size_t pos = 0; pos < header.size(); ++pos) {
    if (!std::isdigit(static_cast<unsigned char>(header[pos])) || (pos > 0 && std::isdigit(static_cast<unsigned char>(header[pos - 1])))) continue;
    size_t end = pos;
    while (end < header.size() && std::isdigit(static_cast<unsigned char>(header[end]))) ++end;
    for (const std::string& s : swaps) mutants.push_back(file_with_header(header.substr(0, pos) + s + header.substr(end), data));
  }
  for (const std::string dt : {"\"F32\"", "\"BF16\"", "\"F16\""}) {
    for (const std::string& s : swaps) {
      std::string h = header;
      if (size_t p = h.find(dt); p != std::string::npos) mutants.push_back(file_with_header(h.replace(p, dt.size(), s), data));
    }
  }
  ASSERT_GT(mutants.size(), 400u);
  int rejected = 0, valid = 0;
  for (size_t i = 0; i < mutants.size(); ++i) {
    const std::string path = dir + "/m.safetensors";
    spit(path, mutants[i]);
    auto f = SafetensorsFile::open(path);
    if (!f.is_ok()) {
      EXPECT_FALSE(f.status().message().empty());
      ++rejected;
      continue;
    }
    ++valid;
    for (const SafetensorsEntry& e : f->entries()) {
      at::Tensor t = f->read(e);
      EXPECT_EQ(static_cast<uint64_t>(t.nbytes()), e.end - e.begin) << "mutant " << i;
    }
  }
  EXPECT_GT(rejected, 300);
  RecordProperty("mutants", static_cast<int>(mutants.size()));
  std::printf("%zu mutants: %d rejected, %d still valid and read within bounds\n", mutants.size(), rejected, valid);
}

}  // namespace
}  // namespace lethe
