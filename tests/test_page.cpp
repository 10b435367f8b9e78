// The agent's page at /: what it holds for a canned round (categories,
// sites, escaped text from the target, a bounded flame graph), how long a
// 1000-thread round takes to render, and what a real browser (Debian's
// chromium, headless) makes of the page of a real agent.
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "agent/flame.h"
#include "agent/page.h"
#include "injector/clock.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

Frame frame(const std::string& function, const std::string& file = "", int line = 0) {
  Frame f;
  f.function = function;
  f.file = file;
  f.line = line;
  f.module = "service";
  return f;
}

// A thread blocked in `category` at `site` (the program's own frame), in
// `primitive`, called from main.
Thread blocked(pid_t tid, const std::string& name, const std::string& category, const Frame& site,
               const std::string& primitive, bool idle = false) {
  Thread t;
  t.tid = tid;
  t.name = name;
  t.state = "sleeping";
  t.captured = "stopped";
  t.frames = {frame(primitive), site, frame("main", "service.cpp", 10)};
  Blocking b;
  b.category = category;
  b.primitive = primitive;
  b.site = site;
  b.idle = idle;
  t.blocking = b;
  return t;
}

// The canned round: threads in lock, sleep and socket, two idle pool
// workers, one running; names and functions with markup in them.
Snapshot canned_round() {
  Snapshot s;
  s.captured_at_unix_ns = wall_ns();
  s.target.pid = getpid();
  s.target.comm = "svc<b>";
  s.target.cmdline = {"/usr/bin/svc", "--name=\"a&b\""};
  s.target.rss_bytes = 64 << 20;
  s.target.threads = 8;
  Frame store = frame("Store::<img src=x onerror=alert(1)>", "store&co.cpp", 42);
  s.threads = {
      blocked(101, "<script>", "lock", store, "pthread_mutex_lock"),
      blocked(102, "db-writer", "lock", store, "pthread_mutex_lock"),
      blocked(103, "napper", "sleep", frame("nap", "timer.cpp", 7), "clock_nanosleep"),
      blocked(104, "fetcher", "socket", frame("Client::fetch", "client.cpp", 99), "recv"),
      blocked(105, "worker_1", "condition", frame("Pool::take", "pool.cpp", 5), "pthread_cond_wait",
              true),
      blocked(106, "worker_2", "condition", frame("Pool::take", "pool.cpp", 5), "pthread_cond_wait",
              true),
  };
  Thread running;
  running.tid = 107;
  running.name = "cruncher";
  running.state = "running";
  running.frames = {frame("crunch", "math.cpp", 3)};
  s.threads.push_back(running);
  s.summary.threads = s.threads.size();
  s.summary.blocked = 6;
  s.summary.idle = 2;
  s.summary.by_category = {{"lock", 2}, {"sleep", 1}, {"socket", 1}, {"condition", 2}};
  s.summary.pools = {{"worker", 2, 2, 0, {{"condition", 2}}}, {"<script>", 2, 0, 2, {}}};
  s.capture.stop_us = {90, 40, 85, 300};
  s.capture.duration_us = 1500;
  s.capture.threads_stopped = 7;
  return s;
}

TEST(Page, HoldsTheCategoriesSitesAndEscapedText) {
  StatusPage page(1.0);
  FlameStacks flame;
  std::vector<Snapshot> round{canned_round()};
  for (int i = 0; i < 3; ++i) {
    for (const Snapshot& s : round) flame.add(s);
    page.add_round(round, "PID 1 (svc<b>) /usr/bin/svc");
  }
  std::string html = page.render(flame);
  // The chart's legend names each blocked category with its count now;
  // idle ones are not stacked, and the note says how many there are.
  EXPECT_NE(html.find("lock <b>2</b>"), std::string::npos);
  EXPECT_NE(html.find("sleep <b>1</b>"), std::string::npos);
  EXPECT_NE(html.find("socket <b>1</b>"), std::string::npos);
  EXPECT_EQ(html.find("condition <b>"), std::string::npos);
  EXPECT_NE(html.find("2 idle now"), std::string::npos);
  // The sites, with their share of the thread-samples: 2 of 7 threads.
  EXPECT_NE(html.find("nap (timer.cpp:7)"), std::string::npos);
  EXPECT_NE(html.find("Client::fetch (client.cpp:99)"), std::string::npos);
  EXPECT_NE(html.find("Store::&lt;img src=x onerror=alert(1)&gt; (store&amp;co.cpp:42)"),
            std::string::npos);
  EXPECT_NE(html.find("29%"), std::string::npos);
  // Text from the target is escaped wherever it shows: the thread named
  // <script> (a site's threads, a pool), the comm, the command line, the
  // flame graph's frames (SVG text and titles).
  EXPECT_NE(html.find("&lt;script&gt;, db-writer"), std::string::npos);
  EXPECT_NE(html.find("<td class=\"code\">&lt;script&gt;</td>"), std::string::npos);
  EXPECT_NE(html.find("svc&lt;b&gt;"), std::string::npos);
  EXPECT_NE(html.find("--name=&quot;a&amp;b&quot;"), std::string::npos);
  EXPECT_NE(html.find("<title>Store::&lt;img src=x onerror=alert(1)&gt;"), std::string::npos);
  EXPECT_EQ(count_of(html, "<script"), 1u);  // the page's own
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_EQ(html.find("svc<b>"), std::string::npos);
  // The flame graph: a frame per distinct (path, name), blocked ones only:
  // the roots lock, sleep and socket, then main, the site, the primitive.
  EXPECT_EQ(count_of(html, "<g class=\"f\""), 3u * 4u);
  EXPECT_NE(html.find("(12 thread-samples)"), std::string::npos);
  EXPECT_NE(html.find("Idle (6) and running (3) thread-samples are not drawn"), std::string::npos);
  // Pools and the agent's cost.
  EXPECT_NE(html.find("<td class=\"code\">worker</td>"), std::string::npos);
  EXPECT_NE(html.find("40 \xc2\xb5s / 85 \xc2\xb5s"), std::string::npos);
  EXPECT_NE(html.find("1.5 ms"), std::string::npos);
  EXPECT_NE(html.find("64.0 MiB"), std::string::npos);
}

TEST(Page, EscapesMarkupAndControlCharacters) {
  EXPECT_EQ(escape_html("<a href='x'>\"&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;");
  EXPECT_EQ(escape_html("bell\x07nl\n"), "bell\xef\xbf\xbdnl\xef\xbf\xbd");
  EXPECT_EQ(escape_html("caf\xc3\xa9"), "caf\xc3\xa9");
}

TEST(Page, CategoriesKeepOneColourInTheChartAndTheFlameGraph) {
  StatusPage page(1.0);
  FlameStacks flame;
  std::vector<Snapshot> round{canned_round()};
  flame.add(round.front());
  page.add_round(round, "svc");
  std::string html = page.render(flame);
  for (const char* c : {"lock", "sleep", "socket"}) {
    std::string colour = category_colour(c);
    // The chart's area, the legend's swatch and the flame graph's root frame.
    EXPECT_NE(html.find("fill=\"" + colour + "\" fill-opacity"), std::string::npos) << c;
    EXPECT_NE(html.find("background:" + colour), std::string::npos) << c;
    EXPECT_NE(html.find("data-d=\"0\"><title>" + std::string(c) + "\n"), std::string::npos) << c;
  }
  EXPECT_NE(category_colour("lock"), category_colour("sleep"));
  EXPECT_EQ(category_colour("idle: queue"), category_colour("idle"));
}

TEST(Page, TheChartLooksBackOverTheLast120Rounds) {
  StatusPage page(1.0);
  std::vector<Snapshot> round{canned_round()};
  for (int i = 0; i < 130; ++i) page.add_round(round, "svc");
  page.no_target("nothing matches 'svc' yet");
  std::string html = page.render(FlameStacks());
  EXPECT_NE(html.find("The last 120 rounds (up to 120)"), std::string::npos);
  EXPECT_NE(html.find("nothing matches &#39;svc&#39; yet"), std::string::npos);
  EXPECT_NE(html.find("No blocked thread yet."), std::string::npos);
  // Shares are over the rounds kept: 119 rounds of 7 threads, 2 of them at the store.
  EXPECT_NE(html.find("<td class=\"n\">238</td>"), std::string::npos);
}

// 10k threads, each in a stack of its own: the page draws at most
// kMaxFlameFrames frames and says how many it left out.
TEST(Page, TheFlameGraphOfTenThousandStacksIsBounded) {
  Snapshot s = canned_round();
  s.threads.clear();
  for (int i = 0; i < 10000; ++i) {
    Thread t = blocked(1000 + i, "w" + std::to_string(i), i % 2 ? "lock" : "socket",
                       frame("handler_" + std::to_string(i % 300), "h.cpp", i % 300),
                       i % 2 ? "pthread_mutex_lock" : "recv");
    t.frames.insert(t.frames.begin(), frame("leaf_" + std::to_string(i)));
    s.threads.push_back(std::move(t));
  }
  FlameStacks flame;
  flame.add(s);
  StatusPage page(1.0);
  page.add_round({s}, "svc");
  std::string html = page.render(flame);
  size_t frames = count_of(html, "<g class=\"f\"");
  EXPECT_GT(frames, 300u);
  EXPECT_LE(frames, StatusPage::kMaxFlameFrames);
  EXPECT_NE(html.find("frames are too narrow to draw and left out"), std::string::npos);
  EXPECT_LT(html.size(), 1500u * 1024) << "bytes";
}

// A 1000-thread target at 120 rounds: the time add_round and render take on
// the agent's thread, printed (not asserted: no timed assertions).
TEST(Page, RenderingAThousandThreadRoundIsCheap) {
  Snapshot s = canned_round();
  s.threads.clear();
  const char* cats[] = {"lock", "condition", "queue", "sleep", "socket", "file", "poll", "futex"};
  for (int i = 0; i < 1000; ++i) {
    Thread t =
        blocked(1000 + i, "worker-" + std::to_string(i), cats[i % 8],
                frame("site_" + std::to_string(i % 50), "svc.cpp", i % 50), "wait", i % 5 == 0);
    for (int d = 0; d < 20; ++d)
      t.frames.push_back(frame("layer_" + std::to_string(d % 7 + i % 3)));
    s.threads.push_back(std::move(t));
  }
  std::vector<Snapshot> round{s};
  FlameStacks flame;
  StatusPage page(1.0);
  for (int i = 0; i < 119; ++i) {
    flame.add(s);
    page.add_round(round, "svc");
  }
  flame.add(s);
  uint64_t begin = monotonic_ns();
  page.add_round(round, "svc");
  double add_ms = static_cast<double>(monotonic_ns() - begin) * 1e-6;
  // The median of a few renders: the first one warms the allocator up.
  std::vector<double> render_ms;
  std::string html;
  for (int i = 0; i < 5; ++i) {
    begin = monotonic_ns();
    html = page.render(flame);
    render_ms.push_back(static_cast<double>(monotonic_ns() - begin) * 1e-6);
  }
  std::sort(render_ms.begin(), render_ms.end());
  std::cout << "[ page    ] 1000 threads, 120 rounds: add_round " << add_ms << " ms, render "
            << render_ms[2] << " ms (median of 5), " << html.size() / 1024 << " KiB, "
            << count_of(html, "<g class=\"f\"") << " flame frames\n";
  RecordProperty("add_round_ms", std::to_string(add_ms));
  RecordProperty("render_ms", std::to_string(render_ms[2]));
  EXPECT_NE(html.find("site_49 (svc.cpp:49)"), std::string::npos);
}

// --- In a real browser ---------------------------------------------------

std::string chromium() {
  for (const char* path : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
    if (access(path, X_OK) == 0) return path;
  return "";
}

// chromium --headless ARGS URL, bounded by `timeout` (which ends its whole
// process group), with a profile folder of its own.
RunResult headless(const std::string& browser, const TempDir& profile,
                   const std::vector<std::string>& args, const std::string& url) {
  std::vector<std::string> argv = {"/usr/bin/timeout",
                                   "--kill-after=5",
                                   "60",
                                   browser,
                                   "--headless",
                                   "--no-sandbox",
                                   "--disable-gpu",
                                   "--no-first-run",
                                   "--user-data-dir=" + profile.path()};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(url);
  return run(argv, std::chrono::seconds(90));
}

TEST(PageInBrowser, ChromiumRendersTheAgentsPage) {
  std::string browser = chromium();
  if (browser.empty()) GTEST_SKIP() << "chromium is not installed (apt-get install chromium)";
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  Agent agent({"--pid", std::to_string(fixture.pid()), "--interval", "200ms"});
  ASSERT_TRUE(agent.serving());
  ASSERT_TRUE(eventually(
      [&] { return metric_value(agent.scrape(), "stackaudit_snapshots_total").value_or(0) >= 4; },
      std::chrono::seconds(20)));
  std::string url = "http://127.0.0.1:" + std::to_string(agent.port()) + "/";
  TempDir profile("page-chromium");

  // The DOM after the script ran and refreshed the page at least once.
  RunResult dom = headless(browser, profile, {"--virtual-time-budget=4000", "--dump-dom"}, url);
  ASSERT_EQ(dom.exit_code, 0) << dom.err;
  const std::string& html = dom.out;
  EXPECT_NE(html.find("Auditing: PID " + std::to_string(fixture.pid())), std::string::npos);
  for (const char* c : {"lock", "condition", "sleep", "socket", "poll", "process"})
    EXPECT_NE(html.find(">" + std::string(c) + " <b>"), std::string::npos) << c;
  for (auto [function, tag] :
       {std::pair{"park_mutex_wait", "mutex_wait"}, std::pair{"park_tcp_recv", "tcp_recv"},
        std::pair{"park_child_wait", "child_wait"}}) {
    std::string site = std::string(function) + " (park_threads.cpp:" +
                       std::to_string(tagged_line(kParkThreadsSource, tag)) + ")";
    EXPECT_NE(html.find(site), std::string::npos) << site;
  }
  size_t frames = count_of(html, "<g class=\"f\"");
  EXPECT_GT(frames, 10u);
  EXPECT_GE(count_of(html, "<rect"), frames);
  size_t at = html.find("data-refreshes=\"");
  ASSERT_NE(at, std::string::npos) << "the page's script did not refresh it";
  EXPECT_GE(std::atoi(html.c_str() + at + 16), 1);

  // Zoomed into a frame (the page keeps the zoom in its address): frames
  // outside it are hidden.
  at = html.find("\" data-d=\"1\"");
  ASSERT_NE(at, std::string::npos);
  at = html.rfind("data-k=\"", at);
  ASSERT_NE(at, std::string::npos);
  std::string key = html.substr(at + 8, 16);
  RunResult zoomed = headless(browser, profile, {"--dump-dom"}, url + "#zoom=" + key);
  ASSERT_EQ(zoomed.exit_code, 0) << zoomed.err;
  EXPECT_GT(count_of(zoomed.out, "style=\"display: none;\""), 0u);

  // A screenshot that is a picture: many colours, among them each
  // category's own (the legend's swatches, the flame graph's roots).
  std::string png = profile.path() + "/page.png";
  RunResult shot =
      headless(browser, profile,
               {"--screenshot=" + png, "--window-size=1280,1600", "--hide-scrollbars"}, url);
  ASSERT_EQ(shot.exit_code, 0) << shot.err;
  ASSERT_TRUE(std::filesystem::exists(png)) << shot.err;
  RunResult pil = run({"/usr/bin/python3", "-c", "import PIL"});
  if (pil.exit_code != 0)
    GTEST_SKIP() << "python3-pil is not installed: the screenshot was taken, not looked at";
  std::string script =
      "import sys\n"
      "from PIL import Image\n"
      "im = Image.open(sys.argv[1]).convert('RGB')\n"
      "colours = im.getcolors(1 << 24)\n"
      "print(im.size[0], im.size[1], len(colours))\n"
      "for hexa in sys.argv[2:]:\n"
      "    want = tuple(int(hexa[i:i + 2], 16) for i in (1, 3, 5))\n"
      "    print(hexa, sum(n for n, c in colours\n"
      "                    if max(abs(a - b) for a, b in zip(c, want)) <= 3))\n";
  std::vector<std::string> argv = {"/usr/bin/python3", "-c", script, png};
  for (const char* c : {"lock", "sleep", "socket"}) argv.push_back(category_colour(c));
  RunResult look = run(argv);
  ASSERT_EQ(look.exit_code, 0) << look.err;
  std::istringstream lines(look.out);
  int width = 0, height = 0;
  size_t colours = 0;
  lines >> width >> height >> colours;
  EXPECT_EQ(width, 1280);
  EXPECT_EQ(height, 1600);
  EXPECT_GT(colours, 50u) << "a blank or one-colour screenshot";
  std::string hexa;
  size_t pixels = 0;
  while (lines >> hexa >> pixels) EXPECT_GT(pixels, 50u) << hexa << " is not in the screenshot";
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace stackaudit::test
