#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace semvis {
namespace {

thread_local bool tl_in_worker = false;

int default_threads() {
  if (const char* env = std::getenv("SEMVIS_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

struct Job {
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t begin = 0, end = 0, chunk = 1, nchunks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex err_mu;
  std::exception_ptr err;

  // Runs chunks until none is left; returns when this thread has nothing more to take.
  void work() {
    for (;;) {
      int64_t c = next.fetch_add(1);
      if (c >= nchunks) return;
      int64_t lo = begin + c * chunk;
      int64_t hi = std::min(end, lo + chunk);
      try {
        (*fn)(lo, hi);
      } catch (...) {
        std::lock_guard<std::mutex> g(err_mu);
        if (!err) err = std::current_exception();
      }
      done.fetch_add(1);
    }
  }
};

class Pool {
 public:
  explicit Pool(int nthreads) {
    for (int i = 0; i < nthreads - 1; ++i) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void run(const std::shared_ptr<Job>& job) {
    {
      std::lock_guard<std::mutex> g(mu_);
      job_ = job;
      ++generation_;
    }
    cv_.notify_all();
    tl_in_worker = true;
    job->work();
    tl_in_worker = false;
    // Wait for chunks still running in workers.
    while (job->done.load() < job->nchunks) std::this_thread::yield();
    std::lock_guard<std::mutex> g(mu_);
    job_.reset();
  }

 private:
  void loop() {
    tl_in_worker = true;
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || (generation_ != seen && job_); });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      job->work();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<Job> job_;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

std::mutex g_pool_mu;  // one parallel region at a time; serializes callers from several Python threads
std::unique_ptr<Pool> g_pool;
int g_num_threads = 0;

}  // namespace

int get_num_threads() {
  std::lock_guard<std::mutex> g(g_pool_mu);
  if (g_num_threads <= 0) g_num_threads = default_threads();
  return g_num_threads;
}

void set_num_threads(int n) {
  std::lock_guard<std::mutex> g(g_pool_mu);
  g_num_threads = n > 0 ? n : default_threads();
  g_pool.reset();
}

void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t n = end - begin;
  int nthreads = get_num_threads();
  if (tl_in_worker || nthreads <= 1 || n <= grain) {
    f(begin, end);
    return;
  }
  std::unique_lock<std::mutex> lk(g_pool_mu, std::try_to_lock);
  if (!lk.owns_lock()) {  // another Python thread is using the pool: run inline rather than wait
    f(begin, end);
    return;
  }
  if (!g_pool || g_pool->size() != nthreads) g_pool = std::make_unique<Pool>(nthreads);
  auto job = std::make_shared<Job>();
  job->fn = &f;
  job->begin = begin;
  job->end = end;
  // ~4 chunks per thread for load balance, never below the grain.
  job->chunk = std::max<int64_t>(grain, (n + 4 * nthreads - 1) / (4 * nthreads));
  job->nchunks = (n + job->chunk - 1) / job->chunk;
  g_pool->run(job);
  if (job->err) std::rethrow_exception(job->err);
}

}  // namespace semvis
