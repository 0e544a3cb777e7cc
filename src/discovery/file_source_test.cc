#include "discovery/file_source.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/testing/temp_dir.h"

namespace hsdo {
namespace {

class FileSourceTest : public ::testing::Test {
 protected:
  // Writes through a rename, as editors and config tools do.
  void Write(const std::string& text) {
    const auto tmp = path_ + ".tmp";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, path_);
  }

  testing::TempDir dir_;
  std::string path_ = dir_.File("targets.yaml");
};

TEST(ParseTargetsYaml, ReadsEveryField) {
  std::vector<std::string> skipped;
  auto targets = ParseTargetsYaml(R"(
targets:
  - ip: 10.0.1.5
    port: 8080
    name: web-1
    asg: web-a
    az: eu-west-1a
  - ip: "2001:DB8::1"
)",
                                  &skipped);
  ASSERT_TRUE(targets.ok()) << targets.error().message;
  ASSERT_EQ(targets->size(), 2u);
  EXPECT_EQ((*targets)[0], (Target{"10.0.1.5", 8080, "web-1", "web-a", "eu-west-1a"}));
  EXPECT_EQ((*targets)[1], (Target{"2001:db8::1", std::nullopt, "2001:db8::1", "", ""}));
  EXPECT_TRUE(skipped.empty());
}

TEST(ParseTargetsYaml, StateDrainAsksThatTheTargetDrain) {
  std::vector<std::string> skipped;
  auto targets = ParseTargetsYaml(R"(targets:
  - ip: 10.0.0.1
    state: drain
  - ip: 10.0.0.2
    state: ready
  - ip: 10.0.0.3
)",
                                  &skipped);
  ASSERT_TRUE(targets.ok()) << targets.error().message;
  ASSERT_EQ(targets->size(), 3u);
  EXPECT_TRUE((*targets)[0].drain);
  EXPECT_FALSE((*targets)[1].drain);
  EXPECT_FALSE((*targets)[2].drain);
  EXPECT_TRUE(skipped.empty());
}

TEST(ParseTargetsYaml, AnyOtherStateIsAnErrorNamingTheTarget) {
  for (const char* state : {"drian", "maint", "\"\"", "[drain]"}) {
    std::vector<std::string> skipped;
    auto targets = ParseTargetsYaml(std::string("targets:\n  - ip: 10.0.0.1\n  - ip: 10.0.0.2\n"
                                                "    state: ") +
                                        state + "\n",
                                    &skipped);
    ASSERT_FALSE(targets.ok()) << state;
    EXPECT_EQ(targets.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(targets.error().message.find("line 3: target 10.0.0.2: state"), std::string::npos)
        << targets.error().message;
  }
}

TEST(ParseTargetsYaml, SkipsInvalidEntriesWithTheirLine) {
  std::vector<std::string> skipped;
  auto targets = ParseTargetsYaml(R"(targets:
  - ip: 10.0.0.1
  - ip: not-an-ip
  - ip: "1.2.3.4; shutdown sessions server be/srv1"
  - ip: 10.0.0.2
    port: 70000
  - ip: 10.0.0.3
    name: "web 3"
  - just-a-string
  - port: 80
  - ip: 10.0.0.4
)",
                                  &skipped);
  ASSERT_TRUE(targets.ok());
  ASSERT_EQ(targets->size(), 2u);
  EXPECT_EQ((*targets)[0].address, "10.0.0.1");
  EXPECT_EQ((*targets)[1].address, "10.0.0.4");
  ASSERT_EQ(skipped.size(), 6u);
  EXPECT_NE(skipped[0].find("line 3"), std::string::npos) << skipped[0];
  EXPECT_NE(skipped[0].find("not-an-ip"), std::string::npos) << skipped[0];
  EXPECT_NE(skipped[2].find("port"), std::string::npos) << skipped[2];
}

TEST(ParseTargetsYaml, InvalidFileGivesTheLine) {
  auto bad = ParseTargetsYaml("targets:\n  - ip: 10.0.0.1\n  - ip: [unclosed\n", nullptr);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("line"), std::string::npos) << bad.error().message;
  EXPECT_FALSE(ParseTargetsYaml("servers: []\n", nullptr).ok());
  EXPECT_FALSE(ParseTargetsYaml("targets: 5\n", nullptr).ok());
}

TEST(ParseTargetsYaml, EmptyListIsNoTargets) {
  auto targets = ParseTargetsYaml("targets:\n", nullptr);
  ASSERT_TRUE(targets.ok());
  EXPECT_TRUE(targets->empty());
}

TEST(ParseTargetsYaml, EveryEntryInvalidIsAnError) {
  std::vector<std::string> skipped;
  auto targets = ParseTargetsYaml(
      "targets:\n  - ip: web-1.internal\n  - ip: 10.0.0.2\n    port: 99999\n  - 7\n", &skipped);
  ASSERT_FALSE(targets.ok());
  EXPECT_NE(targets.error().message.find("every one of the 3 entries is invalid"),
            std::string::npos)
      << targets.error().message;
  EXPECT_NE(targets.error().message.find("web-1.internal"), std::string::npos);
}

TEST(ParseTargetsYaml, AnExplicitlyEmptyListIsNoTargets) {
  auto targets = ParseTargetsYaml("targets: []\n", nullptr);
  ASSERT_TRUE(targets.ok());
  EXPECT_TRUE(targets->empty());
}

TEST_F(FileSourceTest, AFileWithOnlyInvalidEntriesKeepsNothingAndIsAnError) {
  Write("targets:\n  - ip: 10.0.0.1\n");
  FileSource source(path_);
  ASSERT_TRUE(source.Discover().ok());
  Write("targets:\n  - ip: host-a\n  - ip: host-b\n");
  EXPECT_FALSE(source.Discover().ok());
}

TEST_F(FileSourceTest, ReReadsWhenTheFileChanges) {
  Write("targets:\n  - ip: 10.0.0.1\n  - ip: 10.0.0.2\n");
  FileSource source(path_);
  auto first = source.Discover();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->size(), 2u);

  Write("targets:\n  - ip: 10.0.0.1\n");
  auto second = source.Discover();
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].address, "10.0.0.1");
}

TEST_F(FileSourceTest, InvalidFileIsAnErrorUntilFixed) {
  Write("targets:\n  - ip: 10.0.0.1\n");
  FileSource source(path_);
  ASSERT_TRUE(source.Discover().ok());
  Write("targets:\n  - ip: 10.0.0.1\n  bad: [\n");
  auto broken = source.Discover();
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().message.find(path_), std::string::npos);
  EXPECT_NE(broken.error().message.find("line"), std::string::npos) << broken.error().message;
  EXPECT_FALSE(source.Discover().ok());  // unchanged: still broken, not re-read
  Write("targets:\n  - ip: 10.0.0.9\n");
  auto fixed = source.Discover();
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ((*fixed)[0].address, "10.0.0.9");
}

TEST_F(FileSourceTest, MissingFileIsAnError) {
  FileSource source(path_);
  auto missing = source.Discover();
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace hsdo
