#include "runtime/RankExecutor.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace kvplan {
namespace {

enum Command : int32_t {
  kStop, kRun, kLogits, kCopyPage, kSample, kReduceTimes, kCopyWindowPage
};

/// Every rank's all-reduce seconds, on every rank.
std::vector<double> gatherReduceTimes(Executor &share, Collective &comm) {
  const double mine = share.allReduceSeconds().at(0);
  std::vector<double> all(static_cast<size_t>(comm.size()));
  comm.allGather(&mine, all.data(), sizeof mine);
  return all;
}

/// What the leader sends before each call: the command, the entry point
/// (its index in the plan, the same on every rank) and two arguments.
struct Header {
  int32_t command = kStop, entry = -1;
  int64_t a = 0, b = 0;
};

const std::string &entryName(const Plan &plan, int32_t index) {
  if (index < 0 || size_t(index) >= plan.entryPoints.size())
    throw std::logic_error("the leader named entry point #" + std::to_string(index));
  auto it = plan.entryPoints.begin();
  std::advance(it, index);
  return it->first;
}

int32_t entryIndex(const Plan &plan, const std::string &name) {
  auto it = plan.entryPoints.find(name);
  if (it == plan.entryPoints.end()) throw std::logic_error("no entry point '" + name + "'");
  return int32_t(std::distance(plan.entryPoints.begin(), it));
}

/// A call's inputs as one message: the tokens, positions and page table of
/// its active rows (decode's page table has a row per sequence, prefill's
/// and verify's one row for all), and the sliding layers' page table alike
/// where the plan has their pool.
struct InputSizes {
  int64_t rows = 0, table = 0, tableRows = 0, active = 0, tables = 1;
  InputSizes(const EntryPoint &ep, int64_t activeRows)
      : rows(ep.rows), table(ep.arg("page_table")->numElements()),
        tableRows(ep.arg("page_table")->rows()),
        active(std::clamp<int64_t>(activeRows, 1, ep.rows)),
        tables(ep.arg("window_page_table") ? 2 : 1) {}
  /// A page table's elements sent: the active rows' where it has a row
  /// per row of the entry point, else all.
  int64_t tableSent() const { return tableRows == rows ? table / rows * active : table; }
  int64_t total() const { return 2 * active + tables * tableSent(); }
};

void packInputs(Executor &e, const std::string &entry, int64_t activeRows,
                std::vector<int32_t> &buf, bool out) {
  const InputSizes n(e.plan().entryPoints.at(entry), activeRows);
  buf.resize(size_t(n.total()));
  int32_t *parts[] = {e.tokens(entry), e.positions(entry), e.pageTable(entry),
                      e.windowPageTable(entry)};
  const int64_t sent[] = {n.active, n.active, n.tableSent(), n.tableSent()};
  const int64_t sizes[] = {n.rows, n.rows, n.table, n.table};
  const int32_t padding[] = {0, -1, 0, 0}; // what the engine writes past the active rows
  int64_t at = 0;
  for (int i = 0; i < 2 + n.tables; ++i) {
    if (out) {
      std::memcpy(buf.data() + at, parts[i], size_t(sent[i]) * 4);
    } else {
      std::memcpy(parts[i], buf.data() + at, size_t(sent[i]) * 4);
      std::fill(parts[i] + sent[i], parts[i] + sizes[i], padding[i]);
    }
    at += sent[i];
  }
}

void sampleAll(ShardedSampler &s, Executor &share, const std::string &entry,
               const RowSampling *rows, int64_t count, int32_t *out) {
  const Plan &p = share.plan();
  const int64_t width = p.model.vocabSize / p.ranks();
  const float *local = share.logits(entry);
  for (int64_t r = 0; r < count; ++r) out[r] = s.sample(rows[r], local + r * width, width);
}

} // namespace

LeaderExecutor::LeaderExecutor(std::unique_ptr<Executor> s, Collective &c)
    : share(std::move(s)), comm(c), sampler(c) {
  if (comm.rank() != 0) throw std::logic_error("the leader is rank 0");
}

LeaderExecutor::~LeaderExecutor() {
  try {
    send(kStop, "", 0, 0);
  } catch (...) {
    // Ending anyway: a rank left waiting is stopped with the job.
  }
}

void LeaderExecutor::send(int32_t command, const std::string &entry, int64_t a, int64_t b) {
  Header h{command, entry.empty() ? -1 : entryIndex(plan(), entry), a, b};
  comm.broadcast(&h, sizeof h, 0);
}

void LeaderExecutor::run(const std::string &entry, int64_t activeRows) {
  send(kRun, entry, activeRows, 0);
  packInputs(*share, entry, activeRows, inputs, true);
  comm.broadcast(inputs.data(), int64_t(inputs.size() * 4), 0);
  share->run(entry, activeRows);
  lastRows[entry] = activeRows;
  gatheredFor.clear();
}

const float *LeaderExecutor::logits(const std::string &entry) {
  if (gatheredFor == entry) return gathered.data(); // nothing ran since
  const Plan &p = plan();
  const EntryPoint &ep = p.entryPoints.at(entry);
  const int64_t rows = ep.results.at(0).rows();
  // A result of every row (decode, verify): the last run's active rows
  // alone cross between the ranks (a step of one sequence in a plan for 64
  // gathers one row, not 64); prefill's result is its last row already.
  auto last = lastRows.find(entry);
  const int64_t gather =
      rows == ep.rows && last != lastRows.end() ? std::min(rows, last->second) : rows;
  send(kLogits, entry, gather, 0);
  gatherLogitRows(comm, share->logits(entry), gather, p.model.vocabSize / p.ranks(), gathered);
  gathered.resize(size_t(rows * p.model.vocabSize), std::numeric_limits<float>::quiet_NaN());
  gatheredFor = entry;
  ++gathers;
  return gathered.data();
}

void LeaderExecutor::copyPage(int32_t from, int32_t to, bool windowPool) {
  send(windowPool ? kCopyWindowPage : kCopyPage, "", from, to);
  share->copyPage(from, to, windowPool);
}

std::vector<double> LeaderExecutor::allReduceSeconds() {
  send(kReduceTimes, "", 0, 0);
  return gatherReduceTimes(*share, comm);
}

void LeaderExecutor::sampleRows(const std::string &entry, const RowSampling *rows, int64_t count,
                                int32_t *out) {
  send(kSample, entry, count, 0);
  rowsBuffer.assign(rows, rows + count);
  comm.broadcast(rowsBuffer.data(), int64_t(count * sizeof(RowSampling)), 0);
  sampleAll(sampler, *share, entry, rowsBuffer.data(), count, out);
}

void followLeader(Executor &share, Collective &comm) {
  const Plan &p = share.plan();
  ShardedSampler sampler(comm);
  std::vector<int32_t> inputs, tokens;
  std::vector<RowSampling> rows;
  std::vector<float> gathered;
  for (;;) {
    Header h;
    comm.broadcast(&h, sizeof h, 0);
    switch (h.command) {
    case kStop:
      return;
    case kRun: {
      const std::string &entry = entryName(p, h.entry);
      inputs.resize(size_t(InputSizes(p.entryPoints.at(entry), h.a).total()));
      comm.broadcast(inputs.data(), int64_t(inputs.size() * 4), 0);
      packInputs(share, entry, h.a, inputs, false);
      share.run(entry, h.a);
      break;
    }
    case kLogits: {
      const std::string &entry = entryName(p, h.entry);
      if (h.a < 0 || h.a > p.entryPoints.at(entry).results.at(0).rows())
        throw std::logic_error("the leader gathers " + std::to_string(h.a) + " rows of " + entry +
                               "'s logits");
      gatherLogitRows(comm, share.logits(entry), h.a, p.model.vocabSize / p.ranks(), gathered);
      break;
    }
    case kCopyPage:
    case kCopyWindowPage:
      share.copyPage(int32_t(h.a), int32_t(h.b), h.command == kCopyWindowPage);
      break;
    case kReduceTimes:
      gatherReduceTimes(share, comm);
      break;
    case kSample: {
      rows.resize(size_t(h.a));
      tokens.resize(size_t(h.a));
      comm.broadcast(rows.data(), int64_t(rows.size() * sizeof(RowSampling)), 0);
      sampleAll(sampler, share, entryName(p, h.entry), rows.data(), h.a, tokens.data());
      break;
    }
    default:
      throw std::logic_error("rank " + std::to_string(comm.rank()) + " got command " +
                             std::to_string(h.command) + " from the leader");
    }
  }
}

} // namespace kvplan
