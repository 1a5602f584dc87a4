// tfship.server._grpc_front: the gRPC transport of tfship's model server in C++ (grpc++'s callback generic
// service), so that a call costs the Python interpreter two function calls instead of grpcio's Python server
// loop. Every method arrives here as bytes; Python worker threads take calls with next_call(), run the
// servicer (tensorflow_serving's generated handlers, unchanged) and answer with finish(). Health checks
// (grpc.health.v1, Check and Watch) are grpc++'s own service, fed by set_health().
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

class Front;

class Call final : public grpc::ServerGenericBidiReactor {
 public:
  Call(grpc::GenericCallbackServerContext* context, Front* front);
  void OnReadDone(bool ok) override;
  void OnDone() override;
  void Answer(int code, std::string details, const char* data, Py_ssize_t size);

  grpc::GenericCallbackServerContext* context;
  grpc::ByteBuffer request;

 private:
  Front* front_;
  grpc::ByteBuffer response_;
};

class Front final : public grpc::CallbackGenericService {
 public:
  std::unique_ptr<grpc::Server> server;
  std::string replica;
  long max_in_flight = 0;

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override {
    return new Call(context, this);
  }

  // A call whose request arrived: queued for a worker, or refused when too many are running or waiting.
  void Enqueue(Call* call) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!closed_ && in_flight_ < max_in_flight) {
        ++in_flight_;
        queue_.push_back(call);
        ready_.notify_one();
        return;
      }
    }
    call->Answer(GRPC_STATUS_RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!", nullptr, 0);
  }

  // The next call for a worker; nullptr once closed and empty. Called without the GIL.
  Call* Next() {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [this] { return closed_ || !queue_.empty(); });
    if (queue_.empty()) return nullptr;
    Call* call = queue_.front();
    queue_.pop_front();
    return call;
  }

  void Finished() {
    std::lock_guard<std::mutex> lock(mutex_);
    --in_flight_;
  }

  void CallDone() {
    std::lock_guard<std::mutex> lock(mutex_);
    --live_calls_;
    if (live_calls_ == 0) idle_.notify_all();
  }

  void CallCreated() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++live_calls_;
  }

  // Workers return from Next() with nullptr once the queue is empty.
  void Close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    ready_.notify_all();
  }

  bool WaitNoLiveCalls(double seconds) {
    std::unique_lock<std::mutex> lock(mutex_);
    return idle_.wait_for(lock, std::chrono::duration<double>(seconds), [this] { return live_calls_ == 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::condition_variable idle_;
  std::deque<Call*> queue_;
  long in_flight_ = 0;
  long live_calls_ = 0;
  bool closed_ = false;
};

Call::Call(grpc::GenericCallbackServerContext* context, Front* front) : context(context), front_(front) {
  front_->CallCreated();
  if (!front_->replica.empty()) context->AddTrailingMetadata("tfship-replica", front_->replica);
  StartRead(&request);
}

void Call::OnReadDone(bool ok) {
  if (!ok) {  // the client closed without sending its request (or the call was cancelled)
    Finish(grpc::Status(grpc::StatusCode::INTERNAL, "no request message"));
    return;
  }
  front_->Enqueue(this);
}

void Call::Answer(int code, std::string details, const char* data, Py_ssize_t size) {
  if (code == GRPC_STATUS_OK) {
    grpc::Slice slice(data, static_cast<size_t>(size));
    response_ = grpc::ByteBuffer(&slice, 1);
    StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
  } else {
    Finish(grpc::Status(static_cast<grpc::StatusCode>(code), details));
  }
}

void Call::OnDone() {
  front_->CallDone();
  delete this;
}

// ---- the Python type ----

struct FrontObject {
  PyObject_HEAD
  Front* front;
  int port;
  bool stopped;
};

PyObject* Front_new(PyTypeObject* type, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<FrontObject*>(type->tp_alloc(type, 0));
  if (self != nullptr) {
    self->front = nullptr;
    self->port = 0;
    self->stopped = false;
  }
  return self ? reinterpret_cast<PyObject*>(self) : nullptr;
}

// Front(address, options, max_in_flight, replica): binds and starts; RuntimeError when the address cannot be
// bound. options: a sequence of (name, int | str) channel arguments.
int Front_init(FrontObject* self, PyObject* args, PyObject*) {
  const char* address;
  PyObject* options;
  long max_in_flight;
  const char* replica;
  if (!PyArg_ParseTuple(args, "sOls", &address, &options, &max_in_flight, &replica)) return -1;
  auto front = std::make_unique<Front>();
  front->replica = replica;
  front->max_in_flight = max_in_flight;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  PyObject* sequence = PySequence_Fast(options, "options must be a sequence of (name, value) pairs");
  if (sequence == nullptr) return -1;
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(sequence); ++i) {
    PyObject* pair = PySequence_Fast_GET_ITEM(sequence, i);
    const char* name;
    PyObject* value;
    if (!PyArg_ParseTuple(pair, "sO", &name, &value)) {
      Py_DECREF(sequence);
      return -1;
    }
    if (PyLong_Check(value)) {
      long number = PyLong_AsLong(value);
      if (number == -1 && PyErr_Occurred()) {
        Py_DECREF(sequence);
        return -1;
      }
      builder.AddChannelArgument(name, static_cast<int>(number));
    } else if (PyUnicode_Check(value)) {
      builder.AddChannelArgument(name, std::string(PyUnicode_AsUTF8(value)));
    } else {
      Py_DECREF(sequence);
      PyErr_Format(PyExc_TypeError, "channel argument %s must be an int or a str", name);
      return -1;
    }
  }
  Py_DECREF(sequence);
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterCallbackGenericService(front.get());
  std::unique_ptr<grpc::Server> server;
  Py_BEGIN_ALLOW_THREADS
  server = builder.BuildAndStart();
  Py_END_ALLOW_THREADS
  if (server == nullptr || port == 0) {
    PyErr_SetString(PyExc_RuntimeError, "address in use or not available");
    return -1;
  }
  front->server = std::move(server);
  self->front = front.release();
  self->port = port;
  return 0;
}

// next_call() -> (call, method, request bytes, seconds remaining or None), or None once stopped.
PyObject* Front_next_call(FrontObject* self, PyObject*) {
  Call* call;
  Py_BEGIN_ALLOW_THREADS
  call = self->front->Next();
  Py_END_ALLOW_THREADS
  if (call == nullptr) Py_RETURN_NONE;
  std::vector<grpc::Slice> slices;
  call->request.Dump(&slices);
  size_t size = 0;
  for (const auto& slice : slices) size += slice.size();
  PyObject* payload = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
  if (payload == nullptr) {  // no memory for it: the call is answered here, the worker sees the MemoryError
    self->front->Finished();
    call->Answer(GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", nullptr, 0);
    return nullptr;
  }
  char* out = PyBytes_AS_STRING(payload);
  for (const auto& slice : slices) {
    memcpy(out, slice.begin(), slice.size());
    out += slice.size();
  }
  call->request.Clear();
  auto deadline = call->context->deadline();
  PyObject* remaining;
  if (deadline == std::chrono::system_clock::time_point::max()) {
    remaining = Py_NewRef(Py_None);
  } else {
    remaining = PyFloat_FromDouble(std::chrono::duration<double>(deadline - std::chrono::system_clock::now()).count());
  }
  const std::string& method = call->context->method();
  return Py_BuildValue("(Ks#NN)", static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(call)), method.data(),
                       static_cast<Py_ssize_t>(method.size()), payload, remaining);
}

// finish(call, code, details, response bytes or None): answers a call from next_call(), exactly once.
PyObject* Front_finish(FrontObject* self, PyObject* args) {
  unsigned long long handle;
  int code;
  const char* details;
  Py_buffer response = {};
  if (!PyArg_ParseTuple(args, "Kisz*", &handle, &code, &details, &response)) return nullptr;
  Call* call = reinterpret_cast<Call*>(static_cast<uintptr_t>(handle));
  std::string text(details);
  self->front->Finished();
  Py_BEGIN_ALLOW_THREADS
  call->Answer(code, std::move(text), static_cast<const char*>(response.buf), response.len);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&response);
  Py_RETURN_NONE;
}

// set_health(service, serving): grpc.health.v1 status of a service name ("" for the server as a whole).
PyObject* Front_set_health(FrontObject* self, PyObject* args) {
  const char* service;
  int serving;
  if (!PyArg_ParseTuple(args, "sp", &service, &serving)) return nullptr;
  if (auto* health = self->front->server->GetHealthCheckService()) health->SetServingStatus(service, serving);
  Py_RETURN_NONE;
}

// stop(grace_seconds) -> bool: refuse new calls, report NOT_SERVING, give running calls the grace period, then
// cancel what is left. True when every call had ended.
PyObject* Front_stop(FrontObject* self, PyObject* args) {
  double grace;
  if (!PyArg_ParseTuple(args, "d", &grace)) return nullptr;
  if (self->stopped) Py_RETURN_TRUE;
  self->stopped = true;
  bool drained;
  Py_BEGIN_ALLOW_THREADS
  if (auto* health = self->front->server->GetHealthCheckService()) health->Shutdown();
  auto deadline = std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                          std::chrono::duration<double>(grace));
  self->front->server->Shutdown(deadline);
  drained = self->front->WaitNoLiveCalls(0.0);
  self->front->Close();
  Py_END_ALLOW_THREADS
  return PyBool_FromLong(drained);
}

PyObject* Front_get_port(FrontObject* self, void*) { return PyLong_FromLong(self->port); }

void Front_dealloc(FrontObject* self) {
  // A server may only be destroyed once its calls have ended; one that never drained is left to the exit.
  if (self->front != nullptr && self->stopped && self->front->WaitNoLiveCalls(0.0)) {
    self->front->server.reset();
    delete self->front;
  }
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

PyMethodDef Front_methods[] = {
    {"next_call", reinterpret_cast<PyCFunction>(Front_next_call), METH_NOARGS, "The next call, or None once stopped."},
    {"finish", reinterpret_cast<PyCFunction>(Front_finish), METH_VARARGS, "Answer a call, exactly once."},
    {"set_health", reinterpret_cast<PyCFunction>(Front_set_health), METH_VARARGS, "Set a health status."},
    {"stop", reinterpret_cast<PyCFunction>(Front_stop), METH_VARARGS, "Drain within a grace period."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef Front_getset[] = {
    {"port", reinterpret_cast<getter>(Front_get_port), nullptr, "The bound port.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyTypeObject FrontType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_grpc_front", "gRPC transport of tfship's model server.", -1};

}  // namespace

PyMODINIT_FUNC PyInit__grpc_front() {
  FrontType.tp_name = "tfship.server._grpc_front.Front";
  FrontType.tp_basicsize = sizeof(FrontObject);
  FrontType.tp_flags = Py_TPFLAGS_DEFAULT;
  FrontType.tp_doc = "A started gRPC server whose calls Python workers take with next_call().";
  FrontType.tp_new = Front_new;
  FrontType.tp_init = reinterpret_cast<initproc>(Front_init);
  FrontType.tp_dealloc = reinterpret_cast<destructor>(Front_dealloc);
  FrontType.tp_methods = Front_methods;
  FrontType.tp_getset = Front_getset;
  if (PyType_Ready(&FrontType) < 0) return nullptr;
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  if (PyModule_AddObjectRef(module, "Front", reinterpret_cast<PyObject*>(&FrontType)) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
