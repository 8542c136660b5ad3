// Byte-level HTTP/1.1 response framing (no I/O): status lines, heads, chunk framing. Request parsing is
// Beast's parser (http_connection.cc); responses are simple enough to write by hand, which keeps the
// streaming path to one string append per chunk.
#pragma once

#include <string>
#include <string_view>

#include "server/http_server.h"

namespace pagoda::http_wire {

// "OK", "Not Found", ...; "Unknown" for codes without a standard phrase.
std::string_view reason_phrase(int status);

// True for statuses that never carry a body (1xx, 204, 304).
bool status_has_no_body(int status);

// Rejects header names/values that would break framing (CR, LF, NUL; empty or non-token names).
bool valid_header(std::string_view name, std::string_view value);

// "HTTP/1.1 <status> <reason>\r\n" + Content-Type (if not empty) + extra headers + framing headers
// ("Content-Length: n", or "Transfer-Encoding: chunked" when content_length < 0 and chunked) +
// "Connection: close" when close + "\r\n". content_length < 0 and !chunked: no length (body to EOF).
std::string response_head(int status, std::string_view content_type, const HttpHeaders& extra,
                          long long content_length, bool chunked, bool close);

// One chunk of the chunked transfer coding: "<hex size>\r\n<data>\r\n". Empty data gives "" (an empty
// chunk would end the body).
std::string frame_chunk(std::string_view data);

// The last chunk (no trailers).
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// A small complete response used by the transport itself (400, 408, 413, 431, 500, 501, 503).
std::string error_response(int status, bool close);

}  // namespace pagoda::http_wire
