#include "agent/page.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <set>
#include <tuple>

#include "agent/version.h"
#include "collector/rules.h"
#include "injector/clock.h"
#include "injector/proc.h"

namespace stackaudit {
namespace {

// Kept in the page once per render; the script swaps <main> for the one of a
// fresh copy of the page every refresh, so the zoomed frame is kept by key.
constexpr const char* kStyle = R"css(
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:18px;font-weight:600;letter-spacing:.2px}
header h1 span{color:#98a2b3;font-weight:400;font-size:13px;margin-left:8px}
header .what{margin-top:4px;color:#d0d5dd;word-break:break-all}
header .meta{margin-top:6px;color:#98a2b3;font-size:12px}
header a{color:#9ec5fe}
#status{float:right;font-size:12px;color:#98a2b3}
#status.bad{color:#fda29b}
main{max-width:1280px;margin:0 auto;padding:16px 24px 32px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px;
 margin-bottom:16px}
h2{font-size:15px;margin:0 0 2px;font-weight:600}
.note{color:var(--muted);font-size:12px;margin:0 0 10px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;
 margin-bottom:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card b{display:block;font-size:24px;font-weight:600}
.card span{color:var(--muted);font-size:12px}
.card.alert b{color:#d92d20}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;border-bottom:1px solid var(--line);
 padding:4px 8px}
td{padding:4px 8px;border-bottom:1px solid #f0f1f3;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.code{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px;
 word-break:break-all}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;
 vertical-align:-1px}
.bar{display:flex;height:10px;min-width:120px;background:#f0f1f3;border-radius:2px;overflow:hidden}
.bar i{display:block;height:100%}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin-top:6px;font-size:12px}
.legend b{font-variant-numeric:tabular-nums}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:900px){.grid2{grid-template-columns:1fr}}
svg{display:block;width:100%;height:auto}
svg text{font:11px ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;fill:#1d2330}
svg .axis{fill:#667085}
#flame g.f{cursor:pointer}
#flame g.f:hover rect{stroke:#1d2330;stroke-width:1}
#flame text{pointer-events:none}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:10px}
.figs div{border-left:3px solid var(--line);padding:2px 10px}
.figs b{display:block;font-size:18px;font-weight:600;font-variant-numeric:tabular-nums}
.figs span{color:var(--muted);font-size:12px}
.empty{color:var(--muted);font-style:italic}
footer{color:var(--muted);font-size:12px;text-align:center;padding-bottom:20px}
)css";

// Refreshes <main> from a fresh copy of the page; zooms the flame graph into
// a clicked frame (x rescaled; frames outside hidden) and keeps the zoom
// across refreshes by the frame's key.
constexpr const char* kScript = R"js(
(function(){
var zoomKey=null,W=+document.body.dataset.width;
function fit(name,w){var n=Math.floor((w-6)/6.7);if(n<2)return '';
 return name.length<=n?name:name.slice(0,n-1)+'\u2026';}
function zoom(key){var svg=document.getElementById('flame');if(!svg)return;
 var gs=svg.querySelectorAll('g.f'),z=null;
 gs.forEach(function(g){if(g.dataset.k===key)z=g;});
 if(!z)key=null;
 var total=+svg.dataset.total,zs=z?+z.dataset.s:0,zc=z?+z.dataset.c:total,zd=z?+z.dataset.d:0;
 gs.forEach(function(g){var s=+g.dataset.s,c=+g.dataset.c,d=+g.dataset.d,
  r=g.querySelector('rect'),t=g.querySelector('text');
  var inside=d>=zd&&s>=zs&&s+c<=zs+zc,above=d<zd&&s<=zs&&s+c>=zs+zc;
  if(!inside&&!above){g.style.display='none';return;}
  g.style.display='';
  var x=above?0:(s-zs)/zc*W,w=above?W:c/zc*W;
  r.setAttribute('x',x.toFixed(1));r.setAttribute('width',Math.max(w-0.5,0.5).toFixed(1));
  t.setAttribute('x',(x+3).toFixed(1));
  t.textContent=fit(g.querySelector('title').textContent.split('\n')[0],w);});
 zoomKey=key;var b=document.getElementById('unzoom');if(b)b.style.visibility=key?'visible':'hidden';
 history.replaceState(null,'',key?'#zoom='+key:location.pathname);}
document.addEventListener('click',function(e){
 if(e.target.id==='unzoom'){zoom(null);return;}
 var g=e.target.closest&&e.target.closest('#flame g.f');if(g)zoom(g.dataset.k);});
var every=Math.max(1000,+document.body.dataset.refresh),st=document.getElementById('status');
function tick(){if(document.hidden){setTimeout(tick,every);return;}
 fetch(location.pathname,{cache:'no-store'}).then(function(r){return r.text();}).then(function(h){
  var doc=new DOMParser().parseFromString(h,'text/html'),m=doc.querySelector('main');
  if(m){document.querySelector('main').replaceWith(document.adoptNode(m));
   var hd=doc.querySelector('header .what'),mine=document.querySelector('header .what');
   if(hd&&mine)mine.replaceWith(document.adoptNode(hd));
   var mt=doc.querySelector('header .meta'),mm=document.querySelector('header .meta');
   if(mt&&mm)mm.replaceWith(document.adoptNode(mt));
   if(zoomKey)zoom(zoomKey);
   document.body.dataset.refreshes=(+document.body.dataset.refreshes||0)+1;}
  st.textContent='live';st.className='';})
 .catch(function(){st.textContent='the agent does not answer ('+new Date().toLocaleTimeString()+')';
  st.className='bad';})
 .finally(function(){setTimeout(tick,every);});}
if(location.hash.indexOf('#zoom=')===0)zoom(location.hash.slice(6));
setTimeout(tick,every);
})();
)js";

struct CategoryColour {
  const char* name;
  const char* colour;
};
// One hue per category, told apart at a glance; grey for idle, green for running.
constexpr CategoryColour kColours[] = {
    {"lock", "#e8590c"},    {"condition", "#f59f00"}, {"queue", "#ae3ec9"}, {"sleep", "#4c6ef5"},
    {"socket", "#0ca678"},  {"file", "#74b816"},      {"io", "#2b8a3e"},    {"poll", "#15aabf"},
    {"process", "#e64980"}, {"futex", "#7950f2"},     {"other", "#868e96"}, {"idle", "#ced4da"},
    {"running", "#40c057"},
};

// A pool's blocked threads, whatever they wait on: no category's colour.
constexpr const char* kBlockedColour = "#475467";

std::string fixed(double v, int decimals) {
  char buf[64];
  auto end = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, decimals).ptr;
  return std::string(buf, end);
}

std::string bytes(uint64_t b) {
  double v = static_cast<double>(b);
  if (v >= 1024.0 * 1024 * 1024) return fixed(v / (1024.0 * 1024 * 1024), 2) + " GiB";
  if (v >= 1024.0 * 1024) return fixed(v / (1024.0 * 1024), 1) + " MiB";
  if (v >= 1024.0) return fixed(v / 1024.0, 0) + " KiB";
  return std::to_string(b) + " B";
}

std::string micros(uint64_t us) {
  if (us >= 1000000) return fixed(static_cast<double>(us) / 1e6, 2) + " s";
  if (us >= 1000) return fixed(static_cast<double>(us) / 1e3, 1) + " ms";
  return std::to_string(us) + " \xc2\xb5s";
}

std::string percent(double share) {
  double p = share * 100;
  return fixed(p, p < 10 ? 1 : 0) + "%";
}

std::string clock_utc(int64_t unix_ns) {
  time_t t = static_cast<time_t>(unix_ns / 1000000000);
  tm parts{};
  gmtime_r(&t, &parts);
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M:%S UTC", &parts);
  return buf;
}

std::string span(double seconds) {
  if (seconds < 90) return fixed(seconds, 0) + " s";
  if (seconds < 5400) return fixed(seconds / 60, 0) + " min";
  if (seconds < 172800) return fixed(seconds / 3600, 1) + " h";
  return fixed(seconds / 86400, 1) + " d";
}

// A tint of a "#rrggbb" colour: amount 0 keeps it, 1 is white.
std::string tint(const std::string& colour, double amount) {
  static constexpr char kHex[] = "0123456789abcdef";
  auto digit = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out = "#";
  for (size_t i = 1; i + 1 < colour.size(); i += 2) {
    int c = digit(colour[i]) * 16 + digit(colour[i + 1]);
    long mixed = std::lround(c + (255 - c) * amount);
    out += kHex[mixed / 16];
    out += kHex[mixed % 16];
  }
  return out;
}

uint64_t fnv1a(std::string_view text, uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string swatch(std::string_view category) {
  return "<i class=\"sw\" style=\"background:" + category_colour(category) + "\"></i>";
}

// The categories in the page's order: the closed set first, then any other.
std::vector<std::string> ordered(const std::set<std::string>& seen) {
  std::vector<std::string> out;
  for (const auto& c : categories())
    if (seen.count(c)) out.push_back(c);
  for (const auto& c : seen)
    if (!is_category(c)) out.push_back(c);
  return out;
}

// 1, 2 or 5 times a power of ten, so that `top` takes at most 5 steps.
double tick_step(double top) {
  double raw = std::max(top / 5, 1.0);
  double power = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * power >= raw) return m * power;
  return 10 * power;
}

std::string site_of(const Blocking& b) {
  return b.site ? site_label(*b.site) : "in " + b.primitive;
}

// At most `limit` bytes of text, cut on a character's first byte, with "…"
// when cut.
std::string shortened(const std::string& text, size_t limit) {
  if (text.size() <= limit) return text;
  size_t end = limit;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80) --end;
  return text.substr(0, end) + "\xe2\x80\xa6";
}

uint64_t cpu_ticks(const ProcessInfo& info) {
  return info.utime_ticks + info.stime_ticks;
}

}  // namespace

std::string escape_html(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
          out += "\xef\xbf\xbd";  // U+FFFD: a control character has no place in a page
        else
          out += c;
    }
  }
  return out;
}

std::string category_colour(std::string_view category) {
  if (category.starts_with("idle")) category = "idle";
  for (const auto& c : kColours)
    if (category == c.name) return c.colour;
  // A category from elsewhere: a stable colour of its own.
  static constexpr const char* kSpare[] = {"#5c7cfa", "#20c997", "#fab005", "#f06595", "#339af0"};
  return kSpare[fnv1a(category) % std::size(kSpare)];
}

StatusPage::StatusPage(double interval_seconds, size_t max_rounds)
    : interval_(interval_seconds),
      max_rounds_(std::max<size_t>(max_rounds, 2)),
      started_ns_(wall_ns()) {}

void StatusPage::push(RoundFigures figures) {
  for (const auto& [key, n] : figures.sites) site_totals_[key] += n;
  ring_thread_samples_ += figures.threads;
  ring_loop_samples_ += figures.loop_threads;
  ring_loop_blocked_ += figures.loops_blocked;
  ring_.push_back(std::move(figures));
  while (ring_.size() > max_rounds_) {
    const RoundFigures& old = ring_.front();
    for (const auto& [key, n] : old.sites) {
      auto it = site_totals_.find(key);
      if ((it->second -= n) == 0) site_totals_.erase(it);
    }
    ring_thread_samples_ -= old.threads;
    ring_loop_samples_ -= old.loop_threads;
    ring_loop_blocked_ -= old.loops_blocked;
    ring_.pop_front();
  }
}

void StatusPage::add_round(const std::vector<Snapshot>& round, const std::string& targets) {
  headline_ = targets;
  has_target_ = !round.empty();
  ++rounds_;
  RoundFigures f;
  f.target = true;
  f.at_ns = round.empty() ? wall_ns() : round.front().captured_at_unix_ns;
  targets_.clear();
  loop_sites_.clear();
  site_threads_.clear();
  std::map<std::string, Pool> pools;
  std::map<std::string, size_t> sites;
  std::map<std::tuple<std::string, std::string, std::string>, size_t> loops;
  stop_us_ = {};
  capture_us_ = 0;
  stopped_ = not_stopped_ = 0;
  uint64_t now = monotonic_ns();
  std::set<pid_t> present;
  for (const Snapshot& s : round) {
    TargetRow row;
    row.pid = s.target.pid;
    row.comm = s.target.comm;
    for (const auto& a : s.target.cmdline) row.cmdline += (row.cmdline.empty() ? "" : " ") + a;
    row.rss_bytes = s.target.rss_bytes;
    row.threads = s.threads.size();
    f.threads += s.threads.size();
    f.loop_threads += s.summary.event_loop_threads;
    f.loops_blocked += s.summary.event_loops_blocked;
    for (const Thread& t : s.threads) {
      if (!t.blocking) continue;
      const Blocking& b = *t.blocking;
      if (b.blocks_event_loop && runs_event_loop(t))
        ++loops[{site_of(b), b.coroutine ? site_label(*b.coroutine) : "", b.category}];
      if (b.idle) {
        ++row.idle;
        continue;
      }
      ++row.blocked;
      ++f.blocked[b.category];
      std::string key = b.category + '\t' + site_of(b);
      std::vector<std::string>& names = site_threads_[key];
      if (names.size() < 3)
        names.push_back(t.python && !t.python->thread_name.empty() ? t.python->thread_name
                                                                   : t.name);
      ++sites[key];
    }
    f.idle += row.idle;
    for (const Pool& p : s.summary.pools) {
      Pool& sum = pools[p.name];
      sum.name = p.name;
      sum.threads += p.threads;
      sum.idle += p.idle;
      sum.blocked += p.blocked;
    }
    const CaptureSummary& c = s.capture;
    stop_us_.p50_us = std::max(stop_us_.p50_us, c.stop_us.p50_us);
    stop_us_.p99_us = std::max(stop_us_.p99_us, c.stop_us.p99_us);
    stop_us_.max_us = std::max(stop_us_.max_us, c.stop_us.max_us);
    capture_us_ += c.duration_us;
    stopped_ += c.threads_stopped;
    not_stopped_ += c.threads_not_stopped;
    present.insert(s.target.pid);
    // CPU from the ticks read with the capture, between captures.
    auto it = cpu_marks_.find(s.target.pid);
    int64_t at = s.captured_at_unix_ns;
    if (it != cpu_marks_.end() && at > it->second.at_ns && s.target.cpu_ticks >= it->second.ticks)
      row.cpu_percent = 100.0 * static_cast<double>(s.target.cpu_ticks - it->second.ticks) /
                        static_cast<double>(proc::clock_ticks_per_second()) /
                        (static_cast<double>(at - it->second.at_ns) * 1e-9);
    cpu_marks_[s.target.pid] = {s.target.cpu_ticks, at};
    targets_.push_back(std::move(row));
  }
  std::erase_if(cpu_marks_, [&](const auto& m) { return !present.count(m.first); });
  f.stop_p99_us = stop_us_.p99_us;
  f.capture_us = capture_us_;
  f.sites.assign(sites.begin(), sites.end());
  pools_.clear();
  for (auto& [name, p] : pools) pools_.push_back(std::move(p));
  std::stable_sort(pools_.begin(), pools_.end(),
                   [](const Pool& a, const Pool& b) { return a.threads > b.threads; });
  for (const auto& [key, n] : loops)
    loop_sites_.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), n});
  std::stable_sort(loop_sites_.begin(), loop_sites_.end(),
                   [](const LoopSite& a, const LoopSite& b) { return a.threads > b.threads; });
  if (auto self = proc::read_process_info(::getpid())) {
    if (self_mark_.at_ns > 0 && now > static_cast<uint64_t>(self_mark_.at_ns))
      self_cpu_percent_ =
          100.0 * static_cast<double>(cpu_ticks(*self) - self_mark_.ticks) /
          static_cast<double>(proc::clock_ticks_per_second()) /
          (static_cast<double>(now - static_cast<uint64_t>(self_mark_.at_ns)) * 1e-9);
    self_mark_ = {cpu_ticks(*self), static_cast<int64_t>(now)};
    self_rss_bytes_ = self->rss_bytes;
  }
  push(std::move(f));
}

void StatusPage::no_target(const std::string& why) {
  headline_ = why;
  has_target_ = false;
  targets_.clear();
  pools_.clear();
  loop_sites_.clear();
  site_threads_.clear();
  RoundFigures f;
  f.at_ns = wall_ns();
  push(std::move(f));
}

std::string StatusPage::render(const FlameStacks& flame) const {
  uint64_t begin = monotonic_ns();
  std::string html;
  html.reserve(64 * 1024);
  html +=
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
      "<title>stackaudit \xc2\xb7 ";
  html += escape_html(targets_.empty() ? std::string("agent") : targets_.front().comm);
  html += "</title><style>";
  html += kStyle;
  html += "</style></head><body data-refresh=\"";
  html += std::to_string(std::llround(interval_ * 1000));
  html += "\" data-width=\"" + fixed(kFlameWidth, 0) + "\">";
  html += render_header();
  html += "<main>";
  if (!has_target_)
    html += "<section><p class=\"empty\">" + escape_html(headline_) + "</p></section>";
  html += render_targets();
  html += render_chart();
  html += render_sites();
  html += render_pools();
  html += render_flame(flame);
  html += render_cost();
  html += "</main><footer>stackaudit ";
  html += kVersion;
  html +=
      " \xc2\xb7 rendered on the agent once per round \xc2\xb7 <a "
      "href=\"/metrics\">/metrics</a> \xc2\xb7 <a href=\"/folded\">/folded</a></footer>";
  html += "<script>";
  html += kScript;
  html += "</script></body></html>\n";
  last_render_ms_ = static_cast<double>(monotonic_ns() - begin) * 1e-6;
  return html;
}

std::string StatusPage::render_header() const {
  std::string h = "<header><span id=\"status\">live</span><h1>stackaudit agent<span>";
  h += "where the threads wait</span></h1>";
  h += "<div class=\"what\">Auditing: " + escape_html(headline_) + "</div><div class=\"meta\">";
  if (!ring_.empty()) {
    h += "Round " + std::to_string(rounds_) + " \xc2\xb7 every " +
         (interval_ < 1 ? fixed(interval_ * 1000, 0) + " ms"
                        : fixed(interval_, interval_ < 10 ? 1 : 0) + " s") +
         " \xc2\xb7 last round at " + clock_utc(ring_.back().at_ns) + " \xc2\xb7 agent up " +
         span(static_cast<double>(ring_.back().at_ns - started_ns_) * 1e-9) + " \xc2\xb7 ";
  }
  h += "<a href=\"/metrics\">/metrics</a> \xc2\xb7 <a href=\"/folded\">/folded</a></div></header>";
  return h;
}

std::string StatusPage::render_targets() const {
  if (targets_.empty()) return "";
  size_t threads = 0, blocked = 0, idle = 0, loops = 0, loops_blocked = 0;
  for (const TargetRow& t : targets_) {
    threads += t.threads;
    blocked += t.blocked;
    idle += t.idle;
  }
  if (!ring_.empty()) {
    loops = ring_.back().loop_threads;
    loops_blocked = ring_.back().loops_blocked;
  }
  auto card = [](const std::string& value, const std::string& label, bool alert = false) {
    return std::string("<div class=\"card") + (alert ? " alert" : "") + "\"><b>" + value +
           "</b><span>" + label + "</span></div>";
  };
  std::string h = "<div class=\"cards\">";
  if (targets_.size() > 1) h += card(std::to_string(targets_.size()), "processes");
  h += card(std::to_string(threads), "threads");
  h += card(std::to_string(blocked), "blocked", blocked > 0);
  h += card(std::to_string(idle), "idle (waiting for work)");
  h += card(std::to_string(threads - blocked - idle), "running or runnable");
  if (loops > 0)
    h += card(std::to_string(loops_blocked) + " / " + std::to_string(loops),
              "asyncio event loops blocked", loops_blocked > 0);
  h += "</div>";

  h += "<section id=\"targets\"><h2>Target";
  h += targets_.size() > 1 ? "s" : "";
  h += "</h2><p class=\"note\">The latest round; CPU is the share of one core since the round "
       "before.</p><table><tr><th class=\"n\">PID</th><th>comm</th><th>command line</th>"
       "<th class=\"n\">RSS</th><th class=\"n\">threads</th><th class=\"n\">blocked</th>"
       "<th class=\"n\">idle</th><th class=\"n\">CPU</th></tr>";
  size_t shown = 0;
  for (const TargetRow& t : targets_) {
    if (++shown > 50) {
      h += "<tr><td colspan=\"8\" class=\"empty\">and " + std::to_string(targets_.size() - 50) +
           " more processes</td></tr>";
      break;
    }
    h += "<tr><td class=\"n\">" + std::to_string(t.pid) + "</td><td>" + escape_html(t.comm) +
         "</td><td class=\"code\">" + escape_html(shortened(t.cmdline, 300)) +
         "</td><td class=\"n\">" + bytes(t.rss_bytes) + "</td><td class=\"n\">" +
         std::to_string(t.threads) + "</td><td class=\"n\">" + std::to_string(t.blocked) +
         "</td><td class=\"n\">" + std::to_string(t.idle) + "</td><td class=\"n\">" +
         (t.cpu_percent < 0 ? std::string("\xe2\x80\x93") : fixed(t.cpu_percent, 1) + "%") +
         "</td></tr>";
  }
  h += "</table></section>";
  return h;
}

std::string StatusPage::render_chart() const {
  constexpr double W = 1200, H = 230, left = 46, right = 10, top = 10, bottom = 24;
  const double pw = W - left - right, ph = H - top - bottom;
  std::set<std::string> seen;
  size_t highest = 0;
  for (const RoundFigures& r : ring_) {
    size_t sum = 0;
    for (const auto& [c, n] : r.blocked)
      if (n > 0) {
        seen.insert(c);
        sum += n;
      }
    highest = std::max(highest, sum);
  }
  std::vector<std::string> cats = ordered(seen);
  double step = tick_step(static_cast<double>(std::max<size_t>(highest, 1)));
  double ymax = std::ceil(static_cast<double>(std::max<size_t>(highest, 1)) / step) * step;
  const double slot = pw / static_cast<double>(max_rounds_);
  const size_t n = ring_.size();
  auto x_of = [&](size_t i) { return left + static_cast<double>(max_rounds_ - n + i) * slot; };
  auto y_of = [&](double v) { return top + ph - v / ymax * ph; };

  std::string h = "<section id=\"chart\"><h2>Blocked threads per category</h2><p class=\"note\">";
  h += "The last " + std::to_string(n) + " round" + (n == 1 ? "" : "s") + " (up to " +
       std::to_string(max_rounds_) +
       "), stacked; the newest on the right. Idle threads (waiting for work) are left out";
  if (!ring_.empty()) h += ": " + std::to_string(ring_.back().idle) + " idle now";
  h += ".</p><svg viewBox=\"0 0 " + fixed(W, 0) + " " + fixed(H, 0) +
       "\" role=\"img\" aria-label=\"blocked threads per category\">";
  for (double v = 0; v <= ymax + 1e-9; v += step) {
    std::string y = fixed(y_of(v), 1);
    h += "<line x1=\"" + fixed(left, 0) + "\" x2=\"" + fixed(W - right, 0) + "\" y1=\"" + y +
         "\" y2=\"" + y + "\" stroke=\"#e4e7ec\"/><text class=\"axis\" x=\"" + fixed(left - 6, 0) +
         "\" y=\"" + fixed(y_of(v) + 4, 1) + "\" text-anchor=\"end\">" + fixed(v, 0) + "</text>";
  }
  for (size_t i = 0; i < n; ++i)
    if (!ring_[i].target)
      h += "<rect x=\"" + fixed(x_of(i), 1) + "\" y=\"" + fixed(top, 0) + "\" width=\"" +
           fixed(slot, 1) + "\" height=\"" + fixed(ph, 0) + "\" fill=\"#f2f4f7\"/>";
  // A step area per category: each round a column as wide as its slot.
  std::vector<double> base(n, 0);
  for (const std::string& c : cats) {
    std::vector<double> upper(n);
    for (size_t i = 0; i < n; ++i) {
      auto it = ring_[i].blocked.find(c);
      upper[i] = base[i] + (it == ring_[i].blocked.end() ? 0.0 : static_cast<double>(it->second));
    }
    std::string d = "M" + fixed(x_of(0), 1) + "," + fixed(y_of(upper[0]), 1);
    for (size_t i = 0; i < n; ++i) {
      if (i > 0) d += "V" + fixed(y_of(upper[i]), 1);
      d += "H" + fixed(x_of(i) + slot, 1);
    }
    for (size_t i = n; i-- > 0;) {
      d += "V" + fixed(y_of(base[i]), 1);
      d += "H" + fixed(x_of(i), 1);
    }
    h += "<path d=\"" + d + "Z\" fill=\"" + category_colour(c) +
         "\" fill-opacity=\"0.85\"><title>" + escape_html(c) + "</title></path>";
    base = std::move(upper);
  }
  // Hover: what each round held.
  for (size_t i = 0; i < n; ++i) {
    const RoundFigures& r = ring_[i];
    std::string tip = clock_utc(r.at_ns);
    if (!r.target) tip += ": no target";
    for (const std::string& c : cats) {
      auto it = r.blocked.find(c);
      if (it != r.blocked.end() && it->second > 0)
        tip += "\n" + escape_html(c) + ": " + std::to_string(it->second);
    }
    if (r.target) tip += "\nidle: " + std::to_string(r.idle);
    h += "<rect x=\"" + fixed(x_of(i), 1) + "\" y=\"" + fixed(top, 0) + "\" width=\"" +
         fixed(slot, 1) + "\" height=\"" + fixed(ph, 0) + "\" fill=\"transparent\"><title>" + tip +
         "</title></rect>";
  }
  // The time axis: seconds before the latest round.
  if (n > 0) {
    int64_t last = ring_.back().at_ns;
    size_t every = std::max<size_t>(max_rounds_ / 6, 1);
    for (size_t back = 0; back < n; back += every) {
      size_t i = n - 1 - back;
      double seconds = static_cast<double>(last - ring_[i].at_ns) * 1e-9;
      h += "<text class=\"axis\" x=\"" + fixed(x_of(i) + slot / 2, 1) + "\" y=\"" +
           fixed(H - 6, 0) + "\" text-anchor=\"middle\">" +
           (back == 0 ? std::string("now") : "\xe2\x88\x92" + span(seconds)) + "</text>";
    }
  }
  h += "<line x1=\"" + fixed(left, 0) + "\" x2=\"" + fixed(W - right, 0) + "\" y1=\"" +
       fixed(top + ph, 1) + "\" y2=\"" + fixed(top + ph, 1) + "\" stroke=\"#98a2b3\"/></svg>";
  h += "<div class=\"legend\">";
  if (cats.empty()) h += "<span class=\"empty\">No blocked thread in these rounds.</span>";
  for (const std::string& c : cats) {
    size_t now = 0;
    if (!ring_.empty()) {
      auto it = ring_.back().blocked.find(c);
      if (it != ring_.back().blocked.end()) now = it->second;
    }
    h += "<span>" + swatch(c) + escape_html(c) + " <b>" + std::to_string(now) + "</b></span>";
  }
  h += "</div></section>";
  return h;
}

std::string StatusPage::render_sites() const {
  std::vector<std::pair<std::string, size_t>> top(site_totals_.begin(), site_totals_.end());
  std::stable_sort(top.begin(), top.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (top.size() > 15) top.resize(15);
  std::map<std::string, size_t> now;
  if (!ring_.empty())
    for (const auto& [key, n] : ring_.back().sites) now[key] = n;
  std::string h =
      "<section id=\"sites\"><h2>Top blocking sites</h2><p class=\"note\">Where blocked threads "
      "wait: the innermost frame of the program's own code, over the last " +
      std::to_string(ring_.size()) +
      " rounds. Share: of every thread-sample in those rounds (idle ones are not blocking "
      "and not listed).</p>";
  if (top.empty()) return h + "<p class=\"empty\">No blocked thread in these rounds.</p></section>";
  h += "<table><tr><th>category</th><th>site</th><th>threads there now</th><th class=\"n\">now</th>"
       "<th class=\"n\">samples</th><th>share</th><th class=\"n\"></th></tr>";
  double total = static_cast<double>(std::max<size_t>(ring_thread_samples_, 1));
  double widest = static_cast<double>(top.front().second) / total;
  for (const auto& [key, n] : top) {
    size_t tab = key.find('\t');
    std::string category = key.substr(0, tab), site = key.substr(tab + 1);
    double share = static_cast<double>(n) / total;
    auto it = now.find(key);
    std::string names;
    if (auto t = site_threads_.find(key); t != site_threads_.end()) {
      for (const std::string& name : t->second)
        names += (names.empty() ? "" : ", ") + escape_html(name);
      if (it != now.end() && it->second > t->second.size())
        names += " +" + std::to_string(it->second - t->second.size());
    }
    h += "<tr><td>" + swatch(category) + escape_html(category) + "</td><td class=\"code\">" +
         escape_html(site) + "</td><td class=\"code\">" + names + "</td><td class=\"n\">" +
         std::to_string(it == now.end() ? 0 : it->second) + "</td><td class=\"n\">" +
         std::to_string(n) +
         "</td><td><div class=\"bar\"><i style=\"width:" + fixed(100 * share / widest, 1) +
         "%;background:" + category_colour(category) + "\"></i></div></td><td class=\"n\">" +
         percent(share) + "</td></tr>";
  }
  return h + "</table></section>";
}

std::string StatusPage::render_pools() const {
  std::string h =
      "<div class=\"grid2\"><section id=\"pools\"><h2>Thread pools</h2><p class=\"note\">Threads "
      "named alike (worker-1, worker-2\xe2\x80\xa6), the latest round: "
      "<i class=\"sw\" style=\"background:" +
      category_colour("running") +
      "\"></i>running <i class=\"sw\" style=\"background:" + kBlockedColour +
      "\"></i>blocked <i class=\"sw\" style=\"background:" + category_colour("idle") +
      "\"></i>idle</p>";
  if (pools_.empty()) {
    h += "<p class=\"empty\">No pool.</p>";
  } else {
    h += "<table><tr><th>pool</th><th class=\"n\">threads</th><th class=\"n\">blocked</th>"
         "<th class=\"n\">idle</th><th></th></tr>";
    size_t shown = 0;
    for (const Pool& p : pools_) {
      if (++shown > 20) {
        h += "<tr><td colspan=\"5\" class=\"empty\">and " + std::to_string(pools_.size() - 20) +
             " more pools</td></tr>";
        break;
      }
      double t = static_cast<double>(std::max<size_t>(p.threads, 1));
      size_t running = p.threads - std::min(p.threads, p.idle + p.blocked);
      h += "<tr><td class=\"code\">" + escape_html(p.name) + "</td><td class=\"n\">" +
           std::to_string(p.threads) + "</td><td class=\"n\">" + std::to_string(p.blocked) +
           "</td><td class=\"n\">" + std::to_string(p.idle) + "</td><td><div class=\"bar\">" +
           "<i style=\"width:" + fixed(100 * static_cast<double>(running) / t, 1) +
           "%;background:" + category_colour("running") +
           "\"></i><i style=\"width:" + fixed(100 * static_cast<double>(p.blocked) / t, 1) +
           "%;background:" + kBlockedColour +
           "\"></i><i style=\"width:" + fixed(100 * static_cast<double>(p.idle) / t, 1) +
           "%;background:" + category_colour("idle") + "\"></i></div></td></tr>";
    }
    h += "</table>";
  }
  h += "</section><section id=\"loops\"><h2>asyncio event loops</h2>";
  size_t loops = ring_.empty() ? 0 : ring_.back().loop_threads;
  size_t blocked = ring_.empty() ? 0 : ring_.back().loops_blocked;
  if (ring_loop_samples_ == 0) {
    h += "<p class=\"empty\">No thread runs an asyncio event loop.</p></section></div>";
    return h;
  }
  double share = static_cast<double>(ring_loop_blocked_) / static_cast<double>(ring_loop_samples_);
  h += "<p class=\"note\">A loop is blocked when its thread waits outside the selector: every "
       "coroutine on it waits too.</p><div class=\"figs\"><div><b>" +
       std::to_string(blocked) + " / " + std::to_string(loops) +
       "</b><span>loops blocked now</span></div><div><b>" + percent(share) +
       "</b><span>of loop-thread samples blocked, last " + std::to_string(ring_.size()) +
       " rounds</span></div></div>";
  if (!loop_sites_.empty()) {
    h += "<table style=\"margin-top:10px\"><tr><th>category</th><th>blocked at</th>"
         "<th>running coroutine</th><th class=\"n\">loops</th></tr>";
    for (const LoopSite& l : loop_sites_)
      h += "<tr><td>" + swatch(l.category) + escape_html(l.category) + "</td><td class=\"code\">" +
           escape_html(l.site) + "</td><td class=\"code\">" + escape_html(l.coroutine) +
           "</td><td class=\"n\">" + std::to_string(l.threads) + "</td></tr>";
    h += "</table>";
  }
  return h + "</section></div>";
}

std::string StatusPage::render_flame(const FlameStacks& flame) const {
  // Blocked stacks only: idle and running ones are counted, not drawn.
  uint64_t total = 0, idle = 0, running = 0;
  for (const auto& [stack, count] : flame.stacks()) {
    if (stack.front() == "running")
      running += count;
    else if (stack.front().starts_with("idle"))
      idle += count;
    else
      total += count;
  }
  std::string h =
      "<section id=\"flamegraph\"><h2>Where blocked threads wait: flame graph</h2><p "
      "class=\"note\">Every blocked thread of every round since the agent started (" +
      std::to_string(total) +
      " thread-samples), outermost frame at the top, split by category; width is the share of "
      "samples. Idle (" +
      std::to_string(idle) + ") and running (" + std::to_string(running) +
      ") thread-samples are not drawn. Click a frame to zoom in; hover for its name. "
      "<button id=\"unzoom\" style=\"visibility:hidden\">reset zoom</button></p>";
  if (total == 0) return h + "<p class=\"empty\">No blocked thread yet.</p></section>";

  // The stacks are sorted, so a frame's callees follow it in one run: a
  // node's children are found walking the stacks once, keeping the chain of
  // open nodes.
  struct Node {
    const std::string* name;
    size_t depth;
    uint64_t start, count;
    uint64_t key;
  };
  std::vector<Node> nodes;
  std::vector<size_t> chain;
  const std::vector<std::string>* previous = nullptr;
  uint64_t offset = 0;
  for (const auto& [stack, count] : flame.stacks()) {
    if (stack.front() == "running" || stack.front().starts_with("idle")) continue;
    size_t common = 0;
    if (previous)
      while (common < chain.size() && common < stack.size() && (*previous)[common] == stack[common])
        ++common;
    chain.resize(common);
    for (size_t d = common; d < stack.size(); ++d) {
      uint64_t parent_key = d == 0 ? 0xcbf29ce484222325ull : nodes[chain.back()].key;
      nodes.push_back({&stack[d], d, offset, 0, fnv1a(stack[d], parent_key ^ (d * 0x9e37))});
      chain.push_back(nodes.size() - 1);
    }
    for (size_t i : chain) nodes[i].count += count;
    offset += count;
    previous = &stack;
  }
  // Too narrow to see (under a unit of width) or too many: not drawn.
  uint64_t floor = static_cast<uint64_t>(std::ceil(static_cast<double>(total) / kFlameWidth));
  std::vector<uint64_t> counts;
  for (const Node& n : nodes)
    if (n.count >= floor) counts.push_back(n.count);
  if (counts.size() > kMaxFlameFrames) {
    std::nth_element(counts.begin(), counts.begin() + (kMaxFlameFrames - 1), counts.end(),
                     std::greater<>());
    floor = counts[kMaxFlameFrames - 1] + 1;  // ties at the edge go too: never more than the cap
  }
  size_t depth = 0, drawn = 0;
  for (const Node& n : nodes)
    if (n.count >= floor) {
      depth = std::max(depth, n.depth);
      ++drawn;
    }
  constexpr double kRow = 17;
  double height = static_cast<double>(depth + 1) * kRow + 2;
  h.reserve(h.size() + drawn * 300);
  h += "<svg id=\"flame\" viewBox=\"0 0 " + fixed(kFlameWidth, 0) + " " + fixed(height, 0) +
       "\" data-total=\"" + std::to_string(total) + "\">";
  std::string root_colour;
  double scale = kFlameWidth / static_cast<double>(total);
  // Appended piece by piece: with thousands of frames, temporaries add up.
  auto number = [&](double v, int decimals) {
    char buf[32];
    auto end = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, decimals).ptr;
    h.append(buf, end);
  };
  for (const Node& n : nodes) {
    if (n.count < floor) continue;
    if (n.depth == 0) root_colour = category_colour(*n.name);
    double x = static_cast<double>(n.start) * scale, w = static_cast<double>(n.count) * scale;
    double y = static_cast<double>(n.depth) * kRow;
    size_t fits = w > 8 ? static_cast<size_t>((w - 6) / 6.7) : 0;
    char key[17];
    std::snprintf(key, sizeof key, "%016llx", static_cast<unsigned long long>(n.key));
    h += "<g class=\"f\" data-k=\"";
    h.append(key, 16);
    h += "\" data-s=\"";
    h += std::to_string(n.start);
    h += "\" data-c=\"";
    h += std::to_string(n.count);
    h += "\" data-d=\"";
    h += std::to_string(n.depth);
    h += "\"><title>";
    h += escape_html(*n.name);
    h += '\n';
    h += std::to_string(n.count);
    h += " thread-samples, ";
    h += percent(static_cast<double>(n.count) / static_cast<double>(total));
    h += "</title><rect x=\"";
    number(x, 1);
    h += "\" y=\"";
    number(y, 0);
    h += "\" width=\"";
    number(std::max(w - 0.5, 0.5), 1);
    h += "\" height=\"16\" fill=\"";
    // Frames take their category's hue, varied by name so that neighbours
    // are told apart, lighter than the root.
    h += n.depth == 0
             ? root_colour
             : tint(root_colour, 0.35 + 0.3 * static_cast<double>(fnv1a(*n.name) % 100) / 100);
    h += "\"/><text x=\"";
    number(x + 3, 1);
    h += "\" y=\"";
    number(y + 12, 0);
    h += "\">";
    if (fits >= 2)
      h += escape_html(n.name->size() <= fits ? *n.name : shortened(*n.name, fits - 1));
    h += "</text></g>";
  }
  h += "</svg>";
  if (drawn < nodes.size())
    h += "<p class=\"note\" style=\"margin-top:6px\">" + std::to_string(nodes.size() - drawn) +
         " of " + std::to_string(nodes.size()) +
         " frames are too narrow to draw and left out (at most " + std::to_string(kMaxFlameFrames) +
         " are drawn).</p>";
  return h + "</section>";
}

std::string StatusPage::render_cost() const {
  uint64_t worst_p99 = 0, worst_capture = 0;
  for (const RoundFigures& r : ring_) {
    worst_p99 = std::max(worst_p99, r.stop_p99_us);
    worst_capture = std::max(worst_capture, r.capture_us);
  }
  auto fig = [](const std::string& value, const std::string& label) {
    return "<div><b>" + value + "</b><span>" + label + "</span></div>";
  };
  std::string rounds = std::to_string(ring_.size());
  std::string h =
      "<section id=\"cost\"><h2>What the agent costs</h2><p class=\"note\">Each thread is stopped "
      "on its own for the time it takes to read its stack; a thread that has not run since the "
      "round before is not stopped again.</p><div class=\"figs\">";
  h += fig(micros(stop_us_.p50_us) + " / " + micros(stop_us_.p99_us),
           "thread stop p50 / p99, latest round");
  h += fig(micros(stop_us_.max_us), "longest stop, latest round");
  h += fig(micros(worst_p99), "worst stop p99, last " + rounds + " rounds");
  h += fig(micros(capture_us_), "snapshot duration, latest round");
  h += fig(micros(worst_capture), "longest snapshot, last " + rounds + " rounds");
  h += fig(std::to_string(stopped_) + " / " + std::to_string(not_stopped_),
           "threads stopped / read without a stop");
  h += fig(self_cpu_percent_ < 0 ? std::string("\xe2\x80\x93") : fixed(self_cpu_percent_, 1) + "%",
           "agent CPU, share of one core");
  h += fig(bytes(self_rss_bytes_), "agent RSS");
  h += fig(last_render_ms_ < 0 ? std::string("\xe2\x80\x93") : fixed(last_render_ms_, 2) + " ms",
           "rendering the page before this one");
  return h + "</div></section>";
}

}  // namespace stackaudit
