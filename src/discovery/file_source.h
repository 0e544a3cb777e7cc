// FileSource (SERVER_MODE=file): targets from a YAML file, re-read when it changes.
//
//   targets:
//     - ip: 10.0.1.5      # required: an IPv4 or IPv6 literal
//       port: 8080        # optional
//       name: web-1       # optional, defaults to the address
//       asg: web-a        # optional group name, used by the AZ limiter
//       az: eu-west-1a    # optional
//       state: drain      # optional: ready (the default) or drain (issue 10: its slot drains,
//                         # it takes no new slot; anything else makes the file invalid)
//
// An invalid file is an error (with its line number): the orchestrator keeps its last good
// list. So is a file with any invalid entry, so that a typo never frees a slot (an empty list,
// `targets: []`, is valid: no targets, held by the mass-removal guard).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stop_token>
#include <string>

#include "discovery/discovery_source.h"

namespace hsdo {

// Parses the file's text; an error names the line of the first invalid entry.
Result<std::vector<Target>> ParseTargetsYaml(const std::string& text);

class FileSource final : public DiscoverySource {
 public:
  // `cancel` ends the wait of the first read for a file still being written (at shutdown). A
  // file that keeps changing for `changing_too_long` without a version holding still is said
  // once (a warning).
  explicit FileSource(std::string path, std::stop_token cancel = {},
                      std::chrono::milliseconds changing_too_long = std::chrono::seconds(30));

  std::string_view kind() const override { return "file"; }
  Result<std::vector<Target>> Discover() override;
  // Not while a changed version waits to hold still: the list answered is the one before it,
  // which must not confirm a held mass removal the change may undo.
  bool LastAnswerCurrent() const override { return !pending_; }

 private:
  // What identifies a version of the file without reading it.
  struct Version {
    std::filesystem::file_time_type mtime;
    std::uintmax_t size = 0;
    std::uintmax_t inode = 0;
    std::uintmax_t device = 0;
    // The change time, which no tool sets back: an edit in place of the same size whose mtime
    // was put back (`cp -p`, `rsync --inplace -t`, `tar x`) was never read again.
    std::int64_t ctime_ns = 0;
    bool operator==(const Version&) const = default;
  };

  // The first read has no version to keep while the file may be half written: it waits (a
  // second at most) until the file's last write is a second old.
  void WaitUntilStill();

  std::string path_;
  std::stop_token cancel_;
  std::chrono::milliseconds changing_too_long_;
  std::optional<Version> version_;  // of the file last read
  std::optional<Version> pending_;  // changed, not applied until it holds still
  std::size_t applied_hash_ = 0;    // of the text last read and applied
  std::chrono::steady_clock::time_point pending_since_{};   // when pending_ was first seen
  std::chrono::steady_clock::time_point changing_since_{};  // the first change not applied yet
  bool changing_logged_ = false;                            // that it kept changing too long, said
  Result<std::vector<Target>> last_;  // what that read gave; before it, "not read yet"
};

}  // namespace hsdo
