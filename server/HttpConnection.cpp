// A connection's requests read under the limits, then processed by httplib.
#include "server/HttpConnection.h"

#include "server/OpenAiProtocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace kvplan::server {

namespace {

using Clock = std::chrono::steady_clock;

/// httplib's own limit on one header line, CRLF included
/// (CPPHTTPLIB_HEADER_MAX_LENGTH, compiled into Debian's library).
constexpr size_t kHeaderLineMax = 8192;

/// Set on the listener's thread while the pool refuses a connection.
thread_local bool refusingHere = false;
/// Set when this thread's request did not arrive within the read timeout,
/// or its body ran past the limit.
thread_local bool timedOutHere = false;
thread_local bool tooLargeHere = false;

/// "30 s", "0.5 s".
std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

Clock::time_point after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
}

/// Waits until `until` for `events` on `sock`, in slices of at most 100 ms
/// so that a stopping server is noticed: 1 ready, 0 the time ran out, -1
/// the server is stopping or the socket failed.
int waitFor(int sock, short events, Clock::time_point until,
            const std::atomic<socket_t> *listening) {
  for (;;) {
    if (listening && *listening == INVALID_SOCKET) return -1;
    const Clock::time_point now = Clock::now();
    if (now >= until) return 0;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
    pollfd p{sock, events, 0};
    const int r = ::poll(&p, 1, int(std::min<long long>(left, 100)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r > 0) return 1;
  }
}

const char *reasonPhrase(int status) {
  switch (status) {
  case 408: return "Request Timeout";
  case 431: return "Request Header Fields Too Large";
  case 503: return "Service Unavailable";
  default: return "Bad Request";
  }
}

/// Writes a JSON error with Connection: close and ends the connection. With
/// `linger`, first reads and drops what the client still sends (up to a
/// second or 1 MiB), so that closing a socket with unread bytes, which
/// resets it, cannot destroy the answer before the client reads it.
void refuse(int sock, int status, const std::string &message, double writeTimeout,
            bool linger) {
  const std::string body =
      dumpJson(ApiError(status, message, "", "invalid_request_error").body());
  char head[256];
  std::snprintf(head, sizeof head,
                "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                "Connection: close\r\n%s\r\n",
                status, reasonPhrase(status), body.size(),
                status == 503 ? "Retry-After: 1\r\n" : "");
  const std::string response = head + body;
  const Clock::time_point until = after(linger ? writeTimeout : 0.05);
  for (size_t sent = 0; sent < response.size();) {
    if (waitFor(sock, POLLOUT, until, nullptr) != 1) break;
    const ssize_t n = ::send(sock, response.data() + sent, response.size() - sent,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) break;
    sent += size_t(n);
  }
  ::shutdown(sock, SHUT_WR);
  const Clock::time_point drainUntil = after(linger ? 1.0 : 0.0);
  char sink[4096];
  for (size_t drained = 0; drained < (size_t(1) << 20);) {
    const ssize_t n = ::recv(sock, sink, sizeof sink, MSG_DONTWAIT);
    if (n > 0) {
      drained += size_t(n);
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) break;
    if (waitFor(sock, POLLIN, drainUntil, nullptr) != 1) break;
  }
  ::close(sock);
}

/// A thread per connection being served, `waiting` connections more in
/// line; the pool refuses any beyond those on the listener's thread (the
/// connection's task then sees refusingHere and answers 503 at once).
class BoundedPool final : public httplib::TaskQueue {
public:
  BoundedPool(size_t threads, size_t waiting) : capacity(threads + waiting) {
    for (size_t i = 0; i < threads; ++i) workers.emplace_back([this] { work(); });
  }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(m);
      if (busy + jobs.size() < capacity) {
        jobs.push_back(std::move(fn));
        ready.notify_one();
        return;
      }
    }
    refusingHere = true;
    fn();
    refusingHere = false;
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(m);
      stopping = true;
    }
    ready.notify_all();
    for (std::thread &t : workers) t.join();
  }

private:
  /// Runs jobs until the pool stops and none is left.
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(m);
        ready.wait(lock, [this] { return stopping || !jobs.empty(); });
        if (jobs.empty()) return;
        fn = std::move(jobs.front());
        jobs.pop_front();
        ++busy;
      }
      fn();
      std::lock_guard<std::mutex> lock(m);
      --busy;
    }
  }

  size_t capacity, busy = 0; // connections served or waiting, at most; being served
  bool stopping = false;
  std::mutex m;
  std::condition_variable ready;
  std::deque<std::function<void()>> jobs;
  std::vector<std::thread> workers;
};

/// One connection's socket and the bytes read from it that httplib has not
/// taken yet (the rest of a head, or a pipelined request).
struct Connection {
  enum class Head { ok, closed, timedOut, tooLarge, tooMany, lineTooLong };

  Connection(int sock, const HttpLimits &limits, const std::atomic<socket_t> &listening)
      : sock(sock), limits(limits), listening(listening) {}

  int sock;
  const HttpLimits &limits;
  const std::atomic<socket_t> &listening;
  std::string buf;
  size_t off = 0;
  Clock::time_point deadline; // the current request's, head and body
  uint64_t taken = 0, headBytes = 0; // the current request's bytes httplib read, its head's
  bool timedOut = false;

  size_t unread() const { return buf.size() - off; }

  /// Appends what the socket has by `until`: the bytes read, 0 at the end
  /// of the stream, -1 when the time ran out (timedOut set), the server is
  /// stopping or the socket failed.
  ssize_t fill(Clock::time_point until) {
    const int w = waitFor(sock, POLLIN, until, &listening);
    if (w == 0) timedOut = true;
    if (w != 1) return -1;
    char chunk[4096];
    ssize_t n;
    do n = ::recv(sock, chunk, sizeof chunk, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0) buf.append(chunk, size_t(n));
    return n;
  }

  /// Reads until the head's blank line, within the read timeout from now
  /// (the request's first bytes are in) and the size and count limits.
  Head readHead() {
    if (off > 0) buf.erase(0, off);
    off = 0;
    timedOut = false;
    deadline = after(limits.readTimeout);
    size_t scanned = 0, newlines = 0;
    for (;;) {
      const size_t end = buf.find("\r\n\r\n", scanned > 3 ? scanned - 3 : 0);
      if (end != std::string::npos) {
        headBytes = end + 4;
        taken = 0;
        return checkHead(end + 4);
      }
      newlines += size_t(std::count(buf.begin() + long(scanned), buf.end(), '\n'));
      scanned = buf.size();
      // The request line, then more complete header lines than allowed.
      if (newlines > size_t(limits.maxHeaders) + 1) return Head::tooMany;
      if (buf.size() > limits.maxHeaderBytes) return Head::tooLarge;
      const ssize_t n = fill(deadline);
      if (n <= 0) return timedOut ? Head::timedOut : Head::closed;
    }
  }

  /// The head is buf[0, end): its size, its header count (the lines between
  /// the request line and the blank one) and each header line's length.
  Head checkHead(size_t end) const {
    if (end > limits.maxHeaderBytes) return Head::tooLarge;
    size_t lines = 0, start = 0;
    for (size_t i = 0; i < end; ++i) {
      if (buf[i] != '\n') continue;
      if (lines > 0 && i + 1 - start > kHeaderLineMax) return Head::lineTooLong;
      ++lines;
      start = i + 1;
    }
    return lines - 2 > size_t(limits.maxHeaders) ? Head::tooMany : Head::ok;
  }
};

void addressOf(int sock, bool peer, std::string &ip, int &port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  const int r = peer ? ::getpeername(sock, reinterpret_cast<sockaddr *>(&a), &len)
                     : ::getsockname(sock, reinterpret_cast<sockaddr *>(&a), &len);
  char text[INET6_ADDRSTRLEN] = {};
  port = 0;
  if (r == 0 && a.ss_family == AF_INET) {
    const auto *v4 = reinterpret_cast<const sockaddr_in *>(&a);
    ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
    port = ntohs(v4->sin_port);
  } else if (r == 0 && a.ss_family == AF_INET6) {
    const auto *v6 = reinterpret_cast<const sockaddr_in6 *>(&a);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
    port = ntohs(v6->sin6_port);
  }
  ip = text;
}

/// What httplib reads a request from and writes its response to: first
/// the bytes the connection holds, then the socket until the request's
/// deadline; each write waits at most the write timeout.
class LimitedStream final : public httplib::Stream {
public:
  /// `maxWireBody`: the most bytes a body may take on the wire.
  LimitedStream(Connection &c, uint64_t maxWireBody) : c(c), maxWireBody(maxWireBody) {}

  bool is_readable() const override {
    return c.unread() > 0 || waitFor(c.sock, POLLIN, Clock::now(), &c.listening) == 1;
  }

  bool is_writable() const override {
    if (waitFor(c.sock, POLLOUT, after(c.limits.writeTimeout), &c.listening) != 1) return false;
    char byte;
    const ssize_t n = ::recv(c.sock, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)); // 0: the client closed
  }

  ssize_t read(char *ptr, size_t size) override {
    // httplib checks Content-Length against its limit but reads a chunked
    // body whole: the wire's bytes are capped here.
    if (c.taken >= c.headBytes + maxWireBody) {
      tooLargeHere = true;
      return -1;
    }
    size = size_t(std::min<uint64_t>(size, c.headBytes + maxWireBody - c.taken));
    if (c.unread() > 0) {
      const size_t n = std::min(size, c.unread());
      std::copy_n(c.buf.data() + c.off, n, ptr);
      c.off += n;
      c.taken += n;
      return ssize_t(n);
    }
    const int w = waitFor(c.sock, POLLIN, c.deadline, &c.listening);
    if (w == 0) timedOutHere = true;
    if (w != 1) return -1;
    ssize_t n;
    do n = ::recv(c.sock, ptr, size, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0) c.taken += uint64_t(n);
    return n;
  }

  ssize_t write(const char *ptr, size_t size) override {
    if (waitFor(c.sock, POLLOUT, after(c.limits.writeTimeout), nullptr) != 1) return -1;
    ssize_t n;
    do n = ::send(c.sock, ptr, size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string &ip, int &port) const override {
    addressOf(c.sock, true, ip, port);
  }
  void get_local_ip_and_port(std::string &ip, int &port) const override {
    addressOf(c.sock, false, ip, port);
  }
  socket_t socket() const override { return c.sock; }

private:
  Connection &c;
  uint64_t maxWireBody;
};

} // namespace

LimitedHttpServer::LimitedHttpServer(const HttpLimits &l, size_t maxBody, Refused r)
    : limits(l), maxBodyBytes(maxBody), onRefused(std::move(r)) {
  set_payload_max_length(maxBodyBytes);
  const size_t threads = size_t(std::max(limits.maxConnections, 1));
  new_task_queue = [threads] { return new BoundedPool(threads, threads); };
  // What the Keep-Alive header tells clients.
  set_keep_alive_max_count(size_t(limits.maxRequestsPerConnection));
  set_keep_alive_timeout(std::max<time_t>(1, time_t(limits.idleTimeout)));
}

bool LimitedHttpServer::requestTimedOut() { return timedOutHere; }
bool LimitedHttpServer::requestTooLarge() { return tooLargeHere; }

bool LimitedHttpServer::process_and_close_socket(socket_t sock) {
  if (refusingHere) {
    answer(int(sock), 503,
           "all " + std::to_string(limits.maxConnections) + " connection threads are busy and " +
               std::to_string(limits.maxConnections) +
               " more connections wait for them (--max-connections); retry shortly",
           false);
    return false;
  }
  Connection c(int(sock), limits, svr_sock_);
  bool ok = true;
  for (int n = 1; ok && n <= limits.maxRequestsPerConnection; ++n) {
    // Idle: the request's first bytes, or nothing more to do.
    if (c.unread() == 0 && c.fill(after(limits.idleTimeout)) <= 0) break;
    const Connection::Head head = c.readHead();
    if (head == Connection::Head::closed) break;
    if (head != Connection::Head::ok) {
      answer(int(sock), head == Connection::Head::timedOut ? 408 : 431, headError(int(head)), true);
      return false;
    }
    timedOutHere = tooLargeHere = false;
    // Chunked framing may double a body's bytes at most, plus its lines.
    LimitedStream strm(c, 2 * maxBodyBytes + 65536);
    bool closed = false;
    ok = process_request(strm, n == limits.maxRequestsPerConnection, closed, nullptr);
    // A body the deadline cut off leaves the rest of it unread: the stream
    // cannot go on to another request.
    if (closed || timedOutHere || tooLargeHere) break;
  }
  ::shutdown(int(sock), SHUT_RDWR);
  ::close(int(sock));
  return ok;
}

void LimitedHttpServer::answer(int sock, int status, const std::string &message, bool linger) {
  if (onRefused) onRefused(status, message);
  refuse(sock, status, message, limits.writeTimeout, linger);
}

std::string LimitedHttpServer::headError(int head) const {
  switch (Connection::Head(head)) {
  case Connection::Head::timedOut:
    return "the request's headers did not arrive within " + seconds(limits.readTimeout) +
           " (--read-timeout)";
  case Connection::Head::tooLarge:
    return "the request's headers are larger than " + std::to_string(limits.maxHeaderBytes) +
           " bytes (--max-header-bytes)";
  case Connection::Head::tooMany:
    return "the request has more than " + std::to_string(limits.maxHeaders) +
           " headers (--max-headers)";
  default:
    return "a request header is longer than " + std::to_string(kHeaderLineMax) +
           " bytes, the most one header may take";
  }
}

} // namespace kvplan::server
