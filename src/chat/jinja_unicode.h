// Code-point level helpers for the Jinja interpreter's Python string semantics: Python indexes,
// slices, strips and case-maps strings by code point, not by byte.
//
// Invalid UTF-8 never stops rendering: a stray byte b decodes to the lone surrogate U+DC00+b
// (Python's "surrogateescape") and encodes back to the same byte, so slicing and concatenation
// keep arbitrary bytes intact.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pagoda::jinja {

// Decodes the code point at s[pos] and advances pos (always by at least one byte).
char32_t decode_utf8(std::string_view s, size_t& pos);
void encode_utf8(char32_t cp, std::string& out);
std::vector<char32_t> to_code_points(std::string_view s);
std::string from_code_points(const char32_t* begin, const char32_t* end);
size_t code_point_count(std::string_view s);
bool is_ascii(std::string_view s);

// Python str predicates (per code point).
bool py_isspace(char32_t c);
bool py_isprintable(char32_t c);
bool py_isalpha(char32_t c);
bool py_isalnum(char32_t c);
bool py_isdigit(char32_t c);  // approximation: isalnum and not isalpha
bool py_isupper(char32_t c);  // has a lower-case mapping
bool py_islower(char32_t c);  // has an upper-case mapping
// Single code point case mappings (multi-character mappings such as 'ß'.upper() == 'SS' are
// left unchanged).
char32_t py_toupper(char32_t c);
char32_t py_tolower(char32_t c);

// str.upper() / str.lower() / str.title() / str.capitalize() / str.swapcase().
std::string str_upper(std::string_view s);
std::string str_lower(std::string_view s);
std::string str_title(std::string_view s);
std::string str_capitalize(std::string_view s);
std::string str_swapcase(std::string_view s);

// str.strip(chars) / lstrip / rstrip; chars == nullptr strips Python whitespace.
std::string_view str_strip(std::string_view s, const std::string* chars, bool left, bool right);

}  // namespace pagoda::jinja
