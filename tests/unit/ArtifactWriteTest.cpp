// Writing artifacts safely: concurrent writers of one path, writers that
// fail, temporaries left by killed writers, and the errors the user sees.
#include "plan/Artifact.h"
#include "support/AtomicFile.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

using namespace kvplan;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kPayloadBytes = 3 << 20; // larger than the writer's buffer

/// A plan that opens: a one-layer model's shape and cache, no weights and
/// no entry points (the writer does not look at it).
std::string emptyPlanJson() {
  Plan p;
  p.formatVersion = int(kArtifactFormatVersion);
  p.kvplanVersion = "0.1.0";
  p.model.name = "writer-test";
  p.model.hiddenSize = 8;
  p.model.intermediateSize = 16;
  p.model.numLayers = 1;
  p.model.numHeads = 2;
  p.model.numKvHeads = 1;
  p.model.headDim = 4;
  p.model.vocabSize = 10;
  p.model.maxPositions = 32;
  p.settings.weightDtype = DType::bf16;
  p.settings.kvDtype = DType::bf16;
  p.settings.maxSeqLen = 32;
  p.settings.prefillChunk = 4;
  p.settings.pageSize = 8;
  p.settings.kvPages = 4;
  p.kvCache = {1, 4, 8, 1, 4, 4, DType::bf16};
  return toJson(p).dump();
}

/// An artifact whose `ir` names the writer and whose `weights` section is
/// kPayloadBytes of the writer's byte, streamed in small pieces.
ArtifactWriter writerFor(char id) {
  ArtifactWriter w;
  w.addSection("plan", emptyPlanJson());
  w.addSection("ir", std::string("writer ") + id);
  w.addSection("weights", kPayloadBytes, [id](SectionSink &sink) {
    std::string chunk(65536, id);
    for (uint64_t done = 0; done < kPayloadBytes; done += chunk.size())
      sink.write(chunk.data(), chunk.size());
  });
  return w;
}

/// Which writer wrote the artifact at `path`; fails the test unless it
/// opens, every checksum holds and all its bytes are that one writer's.
char writerOf(const std::string &path) {
  Artifact a = Artifact::open(path);
  a.verifySection("weights");
  std::string_view ir = a.section("ir");
  EXPECT_TRUE(ir == "writer A" || ir == "writer B") << ir;
  const char id = ir.back();
  std::string_view payload = a.section("weights");
  EXPECT_EQ(payload.size(), kPayloadBytes);
  EXPECT_EQ(payload.find_first_not_of(id), std::string_view::npos)
      << "the weights mix two writers' bytes";
  return id;
}

std::vector<std::string> filesIn(const fs::path &dir) {
  std::vector<std::string> names;
  for (const auto &e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

/// A pid that belonged to a process that has exited and been reaped.
pid_t deadPid() {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

class ArtifactWrite : public ::testing::Test {
protected:
  void SetUp() override {
    dir = fs::temp_directory_path() /
          ("kvplan-write-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    path = (dir / "a.kvp").string();
  }
  void TearDown() override {
    std::error_code ignored;
    fs::permissions(dir, fs::perms::owner_all, ignored);
    fs::remove_all(dir, ignored);
  }
  std::string writeError(const std::string &to) {
    try {
      writerFor('A').write(to);
    } catch (const InputError &e) {
      return e.what();
    }
    return "(no error)";
  }

  fs::path dir;
  std::string path;
};

} // namespace

// Two writers race to one path many times: both succeed, the file is always
// one of them whole, and no temporary is left.
TEST_F(ArtifactWrite, ConcurrentWritersLeaveOneCompleteArtifact) {
  int seen[2] = {0, 0};
  for (int round = 0; round < 25; ++round) {
    std::atomic<int> ready{0};
    std::string errors[2];
    auto run = [&](int i) {
      ArtifactWriter w = writerFor(char('A' + i));
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      try {
        w.write(path);
      } catch (const std::exception &e) {
        errors[i] = e.what();
      }
    };
    std::thread a(run, 0), b(run, 1);
    a.join();
    b.join();
    EXPECT_EQ(errors[0], "") << "round " << round;
    EXPECT_EQ(errors[1], "") << "round " << round;
    ++seen[writerOf(path) - 'A'];
    ASSERT_EQ(filesIn(dir), std::vector<std::string>{"a.kvp"}) << "round " << round;
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_EQ(seen[0] + seen[1], 25);
}

// A writer that throws part way leaves the old artifact as it was and no
// temporary.
TEST_F(ArtifactWrite, AFailedWriteKeepsTheOldArtifact) {
  writerFor('A').write(path);
  ArtifactWriter w;
  w.addSection("plan", emptyPlanJson());
  w.addSection("weights", kPayloadBytes, [](SectionSink &sink) {
    std::string half(kPayloadBytes / 2, 'B');
    sink.write(half.data(), half.size());
    throw InputError("the checkpoint ended early");
  });
  EXPECT_THROW(w.write(path), InputError);
  EXPECT_EQ(writerOf(path), 'A');
  EXPECT_EQ(filesIn(dir), std::vector<std::string>{"a.kvp"});
}

// A temporary of this path whose process is gone is removed by the next
// write; a live process's, another path's and one not of our naming stay.
TEST_F(ArtifactWrite, StaleTemporaryOfADeadProcessIsRemoved) {
  const std::string dead = std::to_string(deadPid()), live = std::to_string(::getppid());
  const std::vector<std::string> keep = {"a.kvp." + live + ".Xy12Zw.tmp",
                                         "b.kvp." + dead + ".Xy12Zw.tmp", "a.kvp.notes.tmp",
                                         "a.kvp." + dead + ".toolongname.tmp"};
  for (const std::string &name : keep) std::ofstream(dir / name) << "not ours to remove";
  std::ofstream(dir / ("a.kvp." + dead + ".Ab3xYz.tmp")) << std::string(4096, 'x');
  writerFor('A').write(path);
  std::vector<std::string> want = keep;
  want.push_back("a.kvp");
  std::sort(want.begin(), want.end());
  EXPECT_EQ(filesIn(dir), want);
  EXPECT_EQ(writerOf(path), 'A');
}

TEST(AtomicFileNames, TemporaryNamesAreRecognised) {
  long pid = 0;
  EXPECT_TRUE(AtomicFile::isTemporaryName("m.kvp.4242.aB3xYz.tmp", "m.kvp", pid));
  EXPECT_EQ(pid, 4242);
  EXPECT_FALSE(AtomicFile::isTemporaryName("m.kvp.tmp", "m.kvp", pid));
  EXPECT_FALSE(AtomicFile::isTemporaryName("m.kvp.x42.aB3xYz.tmp", "m.kvp", pid));
  EXPECT_FALSE(AtomicFile::isTemporaryName("m.kvp.42.aB3xY.tmp", "m.kvp", pid));
  EXPECT_FALSE(AtomicFile::isTemporaryName("m.kvp.42.aB3x-z.tmp", "m.kvp", pid));
  EXPECT_FALSE(AtomicFile::isTemporaryName("n.kvp.42.aB3xYz.tmp", "m.kvp", pid));
  EXPECT_FALSE(AtomicFile::isTemporaryName("m.kvpx42.aB3xYz.tmp", "m.kvp", pid));
}

// Errors name the path as given and say what to do; nothing is left behind.
TEST_F(ArtifactWrite, ErrorsNameThePathAndTheFix) {
  fs::create_directories(dir / "sub");
  const std::string folder = (dir / "sub").string();
  std::string msg = writeError(folder);
  EXPECT_EQ(msg.rfind(folder + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find("it is a folder; give a file name (for example " + folder + "/out.kvp)"),
            std::string::npos)
      << msg;

  const std::string missing = (dir / "nope" / "m.kvp").string();
  msg = writeError(missing);
  EXPECT_EQ(msg.rfind(missing + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find("the folder " + (dir / "nope").string() + " does not exist; create it first"),
            std::string::npos)
      << msg;

  if (::geteuid() != 0) { // root writes anywhere
    fs::permissions(dir / "sub", fs::perms::owner_read | fs::perms::owner_exec);
    const std::string locked = folder + "/m.kvp";
    msg = writeError(locked);
    EXPECT_EQ(msg.rfind(locked + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find("is not writable"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fix the folder's permissions"), std::string::npos) << msg;
    fs::permissions(dir / "sub", fs::perms::owner_all);
  }
  EXPECT_EQ(filesIn(dir), std::vector<std::string>{"sub"});
  EXPECT_TRUE(fs::is_empty(dir / "sub"));
}
