// headwise/version.hpp — the library's version, the one source of truth: CMake's
// project() reads these three lines (CMakeLists.txt), so a plain -I user sees the same
// number as a find_package user. HEADWISE_VERSION is major·10000 + minor·100 + patch,
// for `#if HEADWISE_VERSION >= 200` (0.2.0) checks.
#pragma once

#define HEADWISE_VERSION_MAJOR 0
#define HEADWISE_VERSION_MINOR 2
#define HEADWISE_VERSION_PATCH 0

#define HEADWISE_VERSION \
  (HEADWISE_VERSION_MAJOR * 10000 + HEADWISE_VERSION_MINOR * 100 + HEADWISE_VERSION_PATCH)
