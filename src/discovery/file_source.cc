#include "discovery/file_source.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "common/logging.h"
#include "common/sleep.h"
#include "common/validate.h"

namespace hsdo {

namespace {

// A file whose last write is this old is whole (as far as a reader can tell).
constexpr std::chrono::seconds kSettled{1};

std::string Scalar(const YAML::Node& entry, const char* key) {
  const YAML::Node value = entry[key];
  return value && value.IsScalar() ? value.Scalar() : std::string{};
}

// A value from the file, for an error message: control characters escaped, at most 64 bytes.
std::string Shown(std::string_view value) {
  return logging::EscapeControlCharacters(value.substr(0, 64)) + (value.size() > 64 ? "..." : "");
}

}  // namespace

Result<std::vector<Target>> ParseTargetsYaml(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return MakeError(ErrorCode::kInvalidArgument, "line {}: {}", e.mark.line + 1, e.msg);
  }
  if (!root.IsMap() || !root["targets"]) {
    return MakeError(ErrorCode::kInvalidArgument, "line 1: expected a map with a 'targets' list");
  }
  const YAML::Node list = root["targets"];
  if (list.IsNull()) return std::vector<Target>{};  // "targets:" with nothing: none
  if (!list.IsSequence()) {
    return MakeError(ErrorCode::kInvalidArgument, "line {}: 'targets' must be a list",
                     list.Mark().line + 1);
  }
  // Any invalid entry makes the whole file invalid, and the orchestrator keeps its last good
  // list: skipped, the entry would free its target's slot at once, and after the fix the
  // target would come back in another slot (its keys moved on every node).
  std::vector<Target> targets;
  for (const YAML::Node& entry : list) {
    const int line = entry.Mark().line + 1;
    const auto invalid = [&](std::string why) {
      return MakeError(ErrorCode::kInvalidArgument, "line {}: {}", line, why);
    };
    if (!entry.IsMap()) return invalid("expected a map with at least 'ip'");
    const std::string ip = Scalar(entry, "ip");
    const auto address = TargetAddress(ip);
    if (!address) {
      return invalid(fmt::format("ip \"{}\" is not a server's IPv4 or IPv6 address", Shown(ip)));
    }
    Target target;
    target.address = *address;
    if (entry["port"]) {
      const std::string port = Scalar(entry, "port");
      int value = 0;
      const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
      if (ec != std::errc() || ptr != port.data() + port.size() || value < 1 || value > 65535) {
        return invalid(fmt::format("target {}: port \"{}\" is not a port number from 1 to 65535",
                                   target.address, Shown(port)));
      }
      target.port = static_cast<std::uint16_t>(value);
    }
    if (entry["state"]) {
      const std::string state = Scalar(entry, "state");
      if (state != "ready" && state != "drain") {
        return invalid(fmt::format("target {}: state \"{}\" must be ready or drain", target.address,
                                   Shown(state)));
      }
      target.drain = state == "drain";
    }
    target.name = entry["name"] ? Scalar(entry, "name") : target.address;
    target.group = Scalar(entry, "asg");
    target.az = Scalar(entry, "az");
    for (const auto& [field, value] :
         {std::pair{"name", &target.name}, std::pair{"asg", &target.group},
          std::pair{"az", &target.az}}) {
      if ((entry[field] || value->size() > 0) && !IsValidLabel(*value)) {
        return invalid(fmt::format("target {}: {} \"{}\" must be 1-255 printable ASCII characters",
                                   target.address, field, Shown(*value)));
      }
    }
    targets.push_back(std::move(target));
  }
  return targets;
}

FileSource::FileSource(std::string path, std::stop_token cancel,
                       std::chrono::milliseconds changing_too_long)
    : path_(std::move(path)),
      cancel_(std::move(cancel)),
      changing_too_long_(changing_too_long),
      // Never an empty list: every slot would be freed (held by the mass-removal guard only).
      last_(MakeError(ErrorCode::kUnavailable,
                      "targets file {} is being written: it is read once it holds still", path_)) {}

void FileSource::WaitUntilStill() {
  std::error_code ec;
  // Never negative: a file from the future (a clock ahead, `touch -d`, `rsync -t`) would hold
  // the first cycle, and with it the lease's renewal, for as long as it is ahead.
  const auto age = std::max(
      std::filesystem::file_time_type::clock::now() - std::filesystem::last_write_time(path_, ec),
      std::filesystem::file_time_type::duration::zero());
  if (ec || age >= kSettled) return;
  // Rounded up, and a little more: a wait cut short by a rounding would find it unsettled.
  const auto wait =
      std::chrono::ceil<std::chrono::milliseconds>(kSettled - age) + std::chrono::milliseconds(10);
  SleepUnlessStopped(wait, cancel_);
}

Result<std::vector<Target>> FileSource::Discover() {
  if (!version_) WaitUntilStill();
  struct stat info {};
  if (::stat(path_.c_str(), &info) != 0) {
    version_.reset();
    return MakeError(ErrorCode::kNotFound, "targets file {}: cannot read it", path_);
  }
  const auto version_of = [&](const struct stat& st) {
    std::error_code ec;
    return Version{std::filesystem::last_write_time(path_, ec),
                   static_cast<std::uintmax_t>(st.st_size), static_cast<std::uintmax_t>(st.st_ino),
                   static_cast<std::uintmax_t>(st.st_dev),
                   std::int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec};
  };
  const Version version = version_of(info);
  if (version_ && *version_ == version) return last_;  // unchanged: no re-read
  const auto now = std::chrono::steady_clock::now();
  const auto said_after = [&] {
    const bool said = changing_logged_;
    changing_logged_ = false;
    return said ? std::chrono::duration_cast<std::chrono::seconds>(now - changing_since_).count()
                : std::optional<std::int64_t>();
  };
  // A version not applied yet: it waits to hold still, the last version applied standing; a
  // file that keeps changing for long is said once.
  const auto wait_for = [&](const Version& next) {
    if (!pending_) changing_since_ = now;
    if (pending_ != next) pending_since_ = now;
    pending_ = next;
    if (now - changing_since_ >= changing_too_long_ && !changing_logged_) {
      changing_logged_ = true;
      spdlog::warn(
          "targets file {} has kept changing for {} s without a version holding still for a "
          "second: the version applied before stands (write it once, through a rename)",
          path_, std::chrono::duration_cast<std::chrono::seconds>(now - changing_since_).count());
    }
    return last_;
  };
  // A version written less than a second ago may be half written: the targets so far, or a
  // value cut short. In place (a shell's `>` then `>>`, an editor that writes in place), and
  // under a new inode too (review: `mv targets.yaml targets.yaml~` then the new file written
  // in two chunks, vim's backup-rename save, was read half written, and the live targets after
  // the cut moved to other slots for good). Such a version is applied once its last write is a
  // second old, or it has held still for a second by this process's clock (an mtime ahead of
  // it); meanwhile the last version applied stands. Not its text holding still across
  // versions: a file rewritten in place every half second, read between its two chunks each
  // time, gave the same half text a second apart (review of f9f78ec: two live slots freed).
  // The first read, after WaitUntilStill, finds a file written again meanwhile the same way.
  const bool held_still =
      std::filesystem::file_time_type::clock::now() - version.mtime >= kSettled ||
      (pending_ == version && now - pending_since_ >= kSettled);
  if (!held_still && pending_ == version) return wait_for(version);  // not read again
  std::ifstream in(path_);
  std::stringstream read;
  read << in.rdbuf();
  if (!in) return MakeError(ErrorCode::kNotFound, "targets file {}: cannot read it", path_);
  const std::string text = std::move(read).str();
  const std::size_t hash = std::hash<std::string>{}(text);
  if (version_ && hash == applied_hash_) {
    // The same bytes as the version applied (a tool that rewrites the file whether or not
    // anything changed, a file put back): nothing new, and nothing to wait for (review: a file
    // rewritten every half second, unchanged, held the mass-removal guard's confirmation).
    version_ = version;
    pending_.reset();
    if (const auto after = said_after()) {
      spdlog::info("targets file {}: back to the version applied, after {} s", path_, *after);
    }
    return last_;
  }
  if (!held_still) return wait_for(version);
  // Written again while it was read: read the version that follows once it holds still.
  if (struct stat after{}; ::stat(path_.c_str(), &after) == 0 && !(version_of(after) == version)) {
    return wait_for(version_of(after));
  }
  if (const auto after = said_after()) {
    spdlog::info("targets file {}: a version held still, after {} s", path_, *after);
  }
  applied_hash_ = hash;
  auto targets = ParseTargetsYaml(text);
  version_ = version;
  pending_.reset();
  if (!targets) {
    last_ = MakeError(ErrorCode::kInvalidArgument, "targets file {} {}", path_,
                      targets.error().message);
    return last_;
  }
  spdlog::info("targets file {}: {} targets", path_, targets->size());
  last_ = std::move(targets);
  return last_;
}

}  // namespace hsdo
