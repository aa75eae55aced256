// Memory traffic and arithmetic of a plan's entry points.
#include "plan/Cost.h"

#include <algorithm>
#include <set>
#include <vector>

namespace kvplan {

int64_t decodeWeightBytes(const Plan &plan, int64_t rows) {
  std::set<std::string> whole, gathered, experts;
  int64_t bytes = 0;
  for (const Step &s : plan.entryPoints.at("decode").steps) {
    const MoEFFNOp *m = s.tryAs<MoEFFNOp>();
    if (!m) {
      for (const std::string &name : stepWeights(s))
        (s.kind() == OpKind::embedding ? gathered : whole).insert(name);
      continue;
    }
    // A mixture of experts reads the experts its rows chose:
    // experts_per_token for one row, at most every expert for many.
    whole.insert(m->router);
    if (m->routerBias) whole.insert(*m->routerBias);
    std::vector<std::string> stacks{m->gate, m->up, m->down};
    for (const auto *bias : {&m->gateBias, &m->upBias, &m->downBias})
      if (*bias) stacks.push_back(**bias); // one row an expert, read as its matrices are
    for (const std::string &name : stacks) {
      if (!experts.insert(name).second) continue; // counted at an earlier step
      const WeightEntry *w = plan.findWeight(name);
      const int64_t all = w->shape[0], read = std::min(all, rows * m->expertsPerToken);
      bytes += int64_t(w->bytes) / all * read;
    }
  }
  for (const std::string &name : whole) bytes += int64_t(plan.findWeight(name)->bytes);
  for (const std::string &name : gathered)
    if (!whole.count(name)) {
      const WeightEntry *w = plan.findWeight(name);
      bytes += rows * w->rowBytes();
    }
  return bytes;
}

double moeFlops(const Plan &plan, const MoEFFNOp &m, double rows) {
  const WeightEntry *router = plan.findWeight(m.router), *gate = plan.findWeight(m.gate);
  const double in = double(router->shape[1]), experts = double(router->shape[0]);
  const double ff = double(gate->shape[1]), k = double(m.expertsPerToken);
  return rows * (2.0 * experts * in + k * 6.0 * ff * in);
}

double productFlops(const Plan &plan, const StepProduct &p, double rows) {
  const WeightEntry *w = plan.findWeight(*p.weight);
  return 2.0 * rows * double(w->shape[0]) * double(w->shape[1]);
}

namespace {
/// The widest window of the attention steps that read one pool (the
/// sliding layers' own, or the main one), 0 where one of them reads every
/// key.
int64_t poolWindow(const Plan &plan, bool windowPool) {
  int64_t widest = 0;
  for (const auto &[name, ep] : plan.entryPoints)
    for (const Step &s : ep.steps)
      if (const AttentionOp *a = s.tryAs<AttentionOp>()) {
        if (a->key.window != windowPool) continue;
        if (!a->window) return 0;
        widest = std::max(widest, *a->window);
      }
  return widest;
}
} // namespace

int64_t attentionWindow(const Plan &plan) { return poolWindow(plan, false); }

int64_t windowPoolWindow(const Plan &plan) { return poolWindow(plan, true); }

int64_t sequencePeakPages(const Plan &plan) {
  return sequencePeakPages(plan, plan.kvCache.pagesPerSequence * plan.kvCache.pageSize);
}

int64_t sequencePeakPages(const Plan &plan, int64_t tokens) {
  return sequencePeakPages(attentionWindow(plan), plan.kvCache.pageSize,
                           rowsPerCall(plan.settings), tokens);
}

double prefillFlops(const Plan &plan, int64_t promptLen) {
  const EntryPoint &ep = plan.entryPoints.at("prefill");
  double flops = 0;
  for (int64_t done = 0; done < promptLen; done += ep.rows) {
    const int64_t n = std::min(ep.rows, promptLen - done);
    auto rowsOf = [&](const Operand &o) { return o.rows() == ep.rows ? n : o.rows(); };
    for (const Step &s : ep.steps) {
      if (std::optional<StepProduct> p = stepProduct(s)) {
        flops += productFlops(plan, *p, double(rowsOf(*p->input)));
      } else if (const MoEFFNOp *m = s.tryAs<MoEFFNOp>()) {
        flops += moeFlops(plan, *m, double(rowsOf(m->input)));
      } else if (const AttentionOp *a = s.tryAs<AttentionOp>()) {
        const int64_t width = a->result.cols(), window = a->window.value_or(0);
        for (int64_t r = 0; r < rowsOf(a->result); ++r)
          flops += 4.0 * double(keysAttended(window, done + r + 1)) * double(width);
      }
    }
  }
  return flops;
}

Communication allReduceTraffic(const Plan &plan, const std::string &entry, int64_t rows) {
  const EntryPoint &ep = plan.entryPoints.at(entry);
  Communication c;
  for (const Step &s : ep.steps)
    if (const AllReduceOp *a = s.tryAs<AllReduceOp>()) {
      const int64_t n = a->input.rows() == ep.rows ? rows : a->input.rows();
      c.allReduces += 1;
      c.bytes += n * a->input.cols() * dtypeBytes(a->input.dtype);
    }
  return c;
}

} // namespace kvplan
