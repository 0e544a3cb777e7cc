#include "discovery/file_source.h"

#include <sys/stat.h>

#include <charconv>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "common/validate.h"

namespace hsdo {

namespace {

std::string Scalar(const YAML::Node& entry, const char* key) {
  const YAML::Node value = entry[key];
  return value && value.IsScalar() ? value.Scalar() : std::string{};
}

}  // namespace

Result<std::vector<Target>> ParseTargetsYaml(const std::string& text,
                                             std::vector<std::string>* skipped) {
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
  std::vector<Target> targets;
  for (const YAML::Node& entry : list) {
    const int line = entry.Mark().line + 1;
    const auto skip = [&](std::string why) {
      if (skipped != nullptr) skipped->push_back(fmt::format("line {}: {}", line, why));
    };
    if (!entry.IsMap()) {
      skip("expected a map with at least 'ip'");
      continue;
    }
    const std::string ip = Scalar(entry, "ip");
    const auto address = CanonicalIp(ip);
    if (!address) {
      skip(fmt::format("ip \"{}\" is not an IPv4 or IPv6 address", ip));
      continue;
    }
    Target target;
    target.address = *address;
    if (entry["port"]) {
      const std::string port = Scalar(entry, "port");
      int value = 0;
      const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
      if (ec != std::errc() || ptr != port.data() + port.size() || value < 1 || value > 65535) {
        skip(fmt::format("port \"{}\" is not a port number from 1 to 65535", port));
        continue;
      }
      target.port = static_cast<std::uint16_t>(value);
    }
    if (entry["state"]) {
      // Not skipped like other bad fields: a skipped entry would free its slot at once, when
      // the operator meant to drain it. The whole file is refused; the last good list stays.
      const std::string state = Scalar(entry, "state");
      if (state != "ready" && state != "drain") {
        return MakeError(ErrorCode::kInvalidArgument,
                         "line {}: target {}: state \"{}\" must be ready or drain", line,
                         target.address, IsValidLabel(state) ? state : std::string("..."));
      }
      target.drain = state == "drain";
    }
    target.name = entry["name"] ? Scalar(entry, "name") : target.address;
    target.group = Scalar(entry, "asg");
    target.az = Scalar(entry, "az");
    bool labels_ok = true;
    for (const auto& [field, value] :
         {std::pair{"name", &target.name}, std::pair{"asg", &target.group},
          std::pair{"az", &target.az}}) {
      if ((entry[field] || value->size() > 0) && !IsValidLabel(*value)) {
        skip(fmt::format("{} \"{}\" must be 1-255 printable characters without spaces or ;\\'\"",
                         field, *value));
        labels_ok = false;
        break;
      }
    }
    if (labels_ok) targets.push_back(std::move(target));
  }
  if (targets.empty() && list.size() > 0) {
    // Entries, none valid (host names instead of IPs, bad ports): a broken file, not "no
    // targets" (that is an empty list). Taken as is, it would free every slot.
    return MakeError(ErrorCode::kInvalidArgument,
                     "line {}: every one of the {} entries is invalid (first: {})",
                     list.Mark().line + 1, list.size(),
                     skipped != nullptr && !skipped->empty() ? skipped->front() : "?");
  }
  return targets;
}

Result<std::vector<Target>> FileSource::Discover() {
  struct stat info {};
  if (::stat(path_.c_str(), &info) != 0) {
    version_.reset();
    return MakeError(ErrorCode::kNotFound, "targets file {}: cannot read it", path_);
  }
  std::error_code ec;
  const Version version{std::filesystem::last_write_time(path_, ec),
                        static_cast<std::uintmax_t>(info.st_size),
                        static_cast<std::uintmax_t>(info.st_ino)};
  if (version_ && *version_ == version) return last_;  // unchanged: no re-read

  std::ifstream in(path_);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return MakeError(ErrorCode::kNotFound, "targets file {}: cannot read it", path_);
  std::vector<std::string> skipped;
  auto targets = ParseTargetsYaml(text.str(), &skipped);
  version_ = version;
  if (!targets) {
    last_ = MakeError(ErrorCode::kInvalidArgument, "targets file {} {}", path_,
                      targets.error().message);
    return last_;
  }
  for (const auto& why : skipped) spdlog::warn("targets file {} {}: entry skipped", path_, why);
  spdlog::info("targets file {}: {} targets", path_, targets->size());
  last_ = std::move(targets);
  return last_;
}

}  // namespace hsdo
