// Prometheus counters, gauges and histograms for kvplan serve.
#include "server/Metrics.h"

#include "runtime/Scheduler.h"

#include <cstdio>

namespace kvplan::server {

Histogram::Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  ++counts[i];
  sum += v;
  ++count;
}

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string &out, const std::string &name, const char *type, const char *help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void line(std::string &out, const std::string &name, double v) {
  out += name + " " + num(v) + "\n";
}

} // namespace

void Histogram::render(std::string &out, const std::string &name) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    const std::string le = i < bounds.size() ? num(bounds[i]) : "+Inf";
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  line(out, name + "_sum", sum);
  line(out, name + "_count", double(count));
}

Metrics::Metrics()
    : ttft({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      tpot({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

void Metrics::request(int status) {
  std::lock_guard<std::mutex> lock(m);
  ++byStatus[status];
}

void Metrics::generation(int64_t prompt, int64_t output, double firstS, double perTokenS,
                         const std::string &finish) {
  std::lock_guard<std::mutex> lock(m);
  promptTokens += uint64_t(prompt);
  outputTokens += uint64_t(output);
  ++byFinish[finish];
  if (output > 0) ttft.observe(firstS);
  if (output > 1) tpot.observe(perTokenS);
}

void Metrics::sample(Scheduler &s) {
  // Called on the stepping thread, which owns everything read here.
  const PagePool &pool = s.engine().pages();
  EngineGauges now;
  now.waiting = s.waiting();
  now.running = s.running();
  now.pagesTotal = pool.size();
  now.pagesUsed = pool.size() - pool.available();
  now.pagesCached = pool.cachedPages();
  if (const PagePool *w = s.engine().windowPages()) {
    now.windowPagesTotal = w->size();
    now.windowPagesUsed = w->size() - s.engine().freeWindowPages();
  }
  now.promptTokens = s.stats().promptTokens;
  now.cachedPromptTokens = s.stats().cachedPromptTokens;
  now.preemptions = s.stats().preemptions;
  now.steps = s.stats().steps;
  now.verifyCalls = s.stats().verifyCalls;
  now.draftsProposed = s.stats().draftsProposed;
  now.draftsAccepted = s.stats().draftsAccepted;
  now.entryCalls = s.engine().executor().callsByEntry();
  std::lock_guard<std::mutex> lock(m);
  now.inFlight = g.inFlight;
  g = now;
}

void Metrics::setInFlight(int64_t n) {
  std::lock_guard<std::mutex> lock(m);
  g.inFlight = n;
}

EngineGauges Metrics::gauges() const {
  std::lock_guard<std::mutex> lock(m);
  return g;
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(m);
  std::string out;
  header(out, "kvplan_http_requests_total", "counter", "HTTP requests answered, by status.");
  for (const auto &[status, n] : byStatus)
    out += "kvplan_http_requests_total{status=\"" + std::to_string(status) + "\"} " +
           std::to_string(n) + "\n";
  header(out, "kvplan_generations_total", "counter",
         "Generations ended, by finish reason (stop, length, cancelled).");
  for (const auto &[finish, n] : byFinish)
    out += "kvplan_generations_total{finish_reason=\"" + finish + "\"} " + std::to_string(n) +
           "\n";
  header(out, "kvplan_prompt_tokens_total", "counter", "Prompt tokens of ended generations.");
  line(out, "kvplan_prompt_tokens_total", double(promptTokens));
  header(out, "kvplan_generation_tokens_total", "counter", "Tokens generated.");
  line(out, "kvplan_generation_tokens_total", double(outputTokens));
  header(out, "kvplan_requests_in_flight", "gauge",
         "Requests submitted and not finished (what --max-queue bounds).");
  line(out, "kvplan_requests_in_flight", double(g.inFlight));
  header(out, "kvplan_requests_waiting", "gauge", "Requests queued in the scheduler.");
  line(out, "kvplan_requests_waiting", double(g.waiting));
  header(out, "kvplan_requests_running", "gauge", "Sequences the scheduler runs.");
  line(out, "kvplan_requests_running", double(g.running));
  header(out, "kvplan_kv_pages_total", "gauge", "KV-cache pages in the pool.");
  line(out, "kvplan_kv_pages_total", double(g.pagesTotal));
  header(out, "kvplan_kv_pages_used", "gauge", "KV-cache pages held by sequences.");
  line(out, "kvplan_kv_pages_used", double(g.pagesUsed));
  header(out, "kvplan_kv_pages_cached", "gauge", "KV-cache pages in the prefix cache.");
  line(out, "kvplan_kv_pages_cached", double(g.pagesCached));
  if (g.windowPagesTotal > 0) {
    header(out, "kvplan_window_kv_pages_total", "gauge",
           "Pages of the sliding-window layers' own KV-cache pool.");
    line(out, "kvplan_window_kv_pages_total", double(g.windowPagesTotal));
    header(out, "kvplan_window_kv_pages_used", "gauge",
           "Pages of the sliding-window layers' pool held by sequences.");
    line(out, "kvplan_window_kv_pages_used", double(g.windowPagesUsed));
  }
  header(out, "kvplan_prefix_cache_hit_rate", "gauge",
         "Share of admitted prompt tokens taken from the prefix cache.");
  line(out, "kvplan_prefix_cache_hit_rate",
       g.promptTokens ? double(g.cachedPromptTokens) / double(g.promptTokens) : 0.0);
  header(out, "kvplan_preemptions_total", "counter", "Requests preempted for KV-cache pages.");
  line(out, "kvplan_preemptions_total", double(g.preemptions));
  header(out, "kvplan_speculative_verify_calls_total", "counter",
         "Verify calls of speculative decoding (serve --speculate).");
  line(out, "kvplan_speculative_verify_calls_total", double(g.verifyCalls));
  header(out, "kvplan_speculative_drafts_total", "counter",
         "Draft tokens proposed and accepted by verify calls.");
  out += "kvplan_speculative_drafts_total{outcome=\"proposed\"} " +
         std::to_string(g.draftsProposed) + "\n";
  out += "kvplan_speculative_drafts_total{outcome=\"accepted\"} " +
         std::to_string(g.draftsAccepted) + "\n";
  header(out, "kvplan_entry_point_calls_total", "counter",
         "Steps run, by the plan entry point that ran them: a smaller copy (decode.8) where one "
         "served the step.");
  for (const auto &[entry, n] : g.entryCalls)
    out += "kvplan_entry_point_calls_total{entry_point=\"" + entry + "\"} " + std::to_string(n) +
           "\n";
  header(out, "kvplan_time_to_first_token_seconds", "histogram",
         "From the request's arrival to its first generated token.");
  ttft.render(out, "kvplan_time_to_first_token_seconds");
  header(out, "kvplan_time_per_output_token_seconds", "histogram",
         "Between the first and the last generated token, per token after the first.");
  tpot.render(out, "kvplan_time_per_output_token_seconds");
  return out;
}

} // namespace kvplan::server
