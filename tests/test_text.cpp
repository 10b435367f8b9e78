// Text from the target is bytes, not always UTF-8: a thread name cut by the
// kernel inside a character, arguments and paths in another encoding, Python
// strings holding lone surrogates, control bytes. Each must reach the audit
// JSON as valid UTF-8 (invalid bytes replaced with U+FFFD), the metrics as
// valid labels, and the text report without driving the reader's terminal.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "collector/utf8.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

namespace fs = std::filesystem;

const std::string kBad = "\xEF\xBF\xBD";  // U+FFFD, what an invalid byte becomes

TEST(Utf8, InvalidBytesAreReplacedOneByOne) {
  EXPECT_EQ(valid_utf8("plain"), "plain");
  EXPECT_EQ(valid_utf8("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(valid_utf8("cut \xc3"), "cut " + kBad);
  EXPECT_EQ(valid_utf8("\xff\xfe"), kBad + kBad);
  EXPECT_EQ(valid_utf8("\xed\xb3\xbf"), kBad + kBad + kBad);             // an encoded surrogate
  EXPECT_EQ(valid_utf8("\xc0\xaf"), kBad + kBad);                        // an overlong '/'
  EXPECT_EQ(valid_utf8("\xf4\x90\x80\x80"), kBad + kBad + kBad + kBad);  // above U+10FFFF
  EXPECT_EQ(valid_utf8("\xf0\x9f\x98\x80 ok"), "\xf0\x9f\x98\x80 ok");
}

// A copy of the fixture in a directory whose name is not UTF-8.
class OddText : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir() + "odd\xff" + std::to_string(getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy_file(ODD_TEXT_BIN, dir_ + "/odd_text");
    fixture_ =
        std::make_unique<Child>(std::vector<std::string>{dir_ + "/odd_text", dir_, "arg-\xff\xfe"});
    ASSERT_TRUE(fixture_->wait_for("ready", std::chrono::seconds(10)));
  }
  void TearDown() override {
    fixture_.reset();
    fs::remove_all(dir_);
  }
  std::string dir_;
  std::unique_ptr<Child> fixture_;
};

TEST_F(OddText, EveryTextReachesTheJsonAsValidUtf8) {
  RunResult r;
  auto audit = dump_json(fixture_->pid(), &r);  // the parser rejects invalid UTF-8
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(audit["target"]["cmdline"][2], "arg-" + kBad + kBad);
  EXPECT_NE(audit["target"]["exe"].get<std::string>().find("odd" + kBad), std::string::npos);
  // The kernel kept "worker--" and three and a half "é".
  const auto* cut = thread_named(audit, "worker--\xc3\xa9\xc3\xa9\xc3\xa9" + kBad);
  ASSERT_NE(cut, nullptr);
  EXPECT_NE(frame_named(*cut, "cut_name"), nullptr);
  const auto* fifo = thread_named(audit, "fifo_reader");
  ASSERT_NE(fifo, nullptr);
  EXPECT_NE((*fifo)["syscall"]["fd"]["detail"].get<std::string>().find("fifo" + kBad),
            std::string::npos)
      << (*fifo)["syscall"];
  ASSERT_NE(thread_named(audit, "evil\x1b[2J\nx"), nullptr);  // JSON escapes it
}

TEST_F(OddText, TheTextReportEscapesControlBytes) {
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fixture_->pid())});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << "an escape sequence reached the terminal";
  EXPECT_NE(r.out.find("Thread "), std::string::npos);
  EXPECT_NE(r.out.find("\"evil\\x1b[2J\\x0ax\""), std::string::npos) << r.out;
  EXPECT_EQ(valid_utf8(r.out), r.out);
}

TEST_F(OddText, TheAgentWritesItsAuditAndValidMetrics) {
  std::string out = testing::TempDir() + "odd-text-audit.json";
  fs::remove(out);
  Agent agent(
      {"--pid", std::to_string(fixture_->pid()), "--interval", "100ms", "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  std::string scrape;
  ASSERT_TRUE(eventually([&] {
    scrape = agent.scrape();
    return metric_value(scrape, "stackaudit_snapshots_total").value_or(0) >= 2;
  }));
  EXPECT_EQ(agent.stop(), 0);
  auto audit = nlohmann::json::parse(std::ifstream(out));  // throws on invalid UTF-8
  EXPECT_EQ(audit["target"]["cmdline"][2], "arg-" + kBad + kBad);
  std::string file = testing::TempDir() + "odd-text-scrape.txt";
  std::ofstream(file) << scrape;
  RunResult r = run({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + file});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(valid_utf8(scrape), scrape);
}

TEST(OddPythonText, SurrogatesInNamesAndFileNamesBecomeReplacementCharacters) {
  Child fixture({"/usr/bin/python3.11", PY_ODD_TEXT_SCRIPT});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(20)));
  RunResult r;
  auto audit = dump_json(fixture.pid(), &r);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json* odd = nullptr;
  for (const auto& t : audit["threads"])
    if (t["python"].is_object() && t["python"]["thread_name"] == "t" + kBad + "-odd") odd = &t;
  ASSERT_NE(odd, nullptr) << "no thread named t<U+FFFD>-odd";
  const auto* nap = frame_named(*odd, "nap");
  ASSERT_NE(nap, nullptr);
  EXPECT_TRUE((*nap)["file"].get<std::string>().ends_with("/m" + kBad + ".py")) << (*nap)["file"];
  EXPECT_EQ((*nap)["line"], 5);
}

}  // namespace
}  // namespace stackaudit::test
