// The error every layer throws for bad user input; only tools/ decide to exit.
#pragma once

#include <stdexcept>

namespace kvplan {

/// Bad user input (a model file, a flag, an artifact): tools exit 1 with the
/// message, which names the file and field and says what was expected.
class InputError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

} // namespace kvplan
