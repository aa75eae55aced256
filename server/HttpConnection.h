// The connections of kvplan serve under HttpLimits. cpp-httplib 0.11.4 (as
// Debian builds it) reads a request head a byte at a time with no limit on
// its size or on the number of headers (only each line's length, 8 KiB, is
// checked, once the whole line has arrived), its read timeout waits for
// each read alone (a client sending a byte every few seconds holds its
// thread forever), and the connections its threads cannot take wait in an
// unbounded queue. So the server here reads each request's head itself,
// under a deadline and the limits, then hands it with the socket to
// httplib's request processing through a Stream that keeps the deadline
// for the body; and its thread pool refuses connections beyond a bounded
// waiting line.
#pragma once

#include "server/HttpServer.h"

#include <httplib.h>

#include <functional>
#include <string>

namespace kvplan::server {

class LimitedHttpServer : public httplib::Server {
public:
  /// Called for every response the server writes itself (431, 408, 503),
  /// with its status and message, for the metrics and the log.
  using Refused = std::function<void(int status, const std::string &message)>;
  /// `limits.maxConnections` must be positive: the pool's threads. Bodies
  /// over `maxBodyBytes` get 413.
  LimitedHttpServer(const HttpLimits &limits, size_t maxBodyBytes, Refused onRefused);

  /// Whether the request on this thread failed because its client did not
  /// send it within the read timeout (the error handler then answers 408).
  static bool requestTimedOut();
  /// Whether it failed because its (chunked) body ran past the limit.
  static bool requestTooLarge();

private:
  bool process_and_close_socket(socket_t sock) override;
  /// Answers `status` with `message` and ends the connection.
  void answer(int sock, int status, const std::string &message, bool linger);
  /// The message for a head the limits refused (a Connection::Head).
  std::string headError(int head) const;

  HttpLimits limits;
  size_t maxBodyBytes;
  Refused onRefused;
};

} // namespace kvplan::server
