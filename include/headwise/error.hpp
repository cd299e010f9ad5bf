// headwise/error.hpp — the one exception type the library throws.
//
// Every argument check throws headwise::error, derived from std::invalid_argument
// so that callers who already catch std::invalid_argument keep working. The
// message always names the argument, what was expected and what was given:
//   "headwise::attention: k.dim() must equal q.dim() (expected 64, got 32)"
#pragma once

#include <stdexcept>
#include <string>

namespace headwise {

class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace headwise
