"""Stack-trace extraction from container logs of the four runtimes, as an on-call reads them."""

from __future__ import annotations

import json

from selfheal.evidence import stacks

DJANGO = """\
2026-11-28T08:01:02.113Z [2026-11-28 08:01:02 +0000] [7] [INFO] Booting worker with pid: 7
2026-11-28T08:01:03.551Z Internal Server Error: /api/orders/42
2026-11-28T08:01:03.551Z Traceback (most recent call last):
2026-11-28T08:01:03.551Z   File "/usr/local/lib/python3.12/site-packages/django/db/backends/base/base.py", line 275, in ensure_connection
2026-11-28T08:01:03.551Z     self.connect()
2026-11-28T08:01:03.551Z   File "/usr/local/lib/python3.12/site-packages/psycopg2/__init__.py", line 122, in connect
2026-11-28T08:01:03.551Z     conn = _connect(dsn, connection_factory=connection_factory, **kwasync)
2026-11-28T08:01:03.551Z            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
2026-11-28T08:01:03.551Z psycopg2.OperationalError: connection to server at "db" (10.96.0.12), port 5432 failed: Connection refused
2026-11-28T08:01:03.551Z 	Is the server running on that host and accepting TCP/IP connections?
2026-11-28T08:01:03.551Z
2026-11-28T08:01:03.551Z
2026-11-28T08:01:03.551Z The above exception was the direct cause of the following exception:
2026-11-28T08:01:03.551Z
2026-11-28T08:01:03.551Z Traceback (most recent call last):
2026-11-28T08:01:03.551Z   File "/usr/local/lib/python3.12/site-packages/django/core/handlers/exception.py", line 55, in inner
2026-11-28T08:01:03.551Z     response = get_response(request)
2026-11-28T08:01:03.551Z                ^^^^^^^^^^^^^^^^^^^^^
2026-11-28T08:01:03.551Z   File "/app/orders/views.py", line 31, in detail
2026-11-28T08:01:03.551Z     order = Order.objects.get(pk=pk)
2026-11-28T08:01:03.551Z             ^^^^^^^^^^^^^^^^^^^^^^^^
2026-11-28T08:01:03.551Z django.db.utils.OperationalError: connection to server at "db" (10.96.0.12), port 5432 failed: Connection refused
2026-11-28T08:01:03.551Z 	Is the server running on that host and accepting TCP/IP connections?
2026-11-28T08:01:03.552Z [2026-11-28 08:01:03 +0000] [7] [INFO] Worker exiting (pid: 7)
"""  # noqa: E501

FLASK_DURING = """\
[2026-11-28 08:02:10,431] ERROR in app: Exception on /checkout [POST]
Traceback (most recent call last):
  File "/app/checkout.py", line 18, in price
    return PRICES[sku]
           ~~~~~~^^^^^
KeyError: 'sku-991'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/usr/local/lib/python3.11/site-packages/flask/app.py", line 1455, in wsgi_app
    response = self.full_dispatch_request()
  File "/app/checkout.py", line 27, in checkout
    total = price(item["sku"])
  File "/app/checkout.py", line 20, in price
    raise LookupError(f"unknown sku {sku}")
LookupError: unknown sku sku-991
127.0.0.1 - - [28/Nov/2026 08:02:10] "POST /checkout HTTP/1.1" 500 -
"""

SPRING = """\
  .   ____          _            __ _ _
 /\\\\ / ___'_ __ _ _(_)_ __  __ _ \\ \\ \\ \\
 :: Spring Boot ::                (v3.2.3)

2026-11-28T08:03:00.101Z  INFO 1 --- [           main] com.shop.CheckoutApplication             : Starting CheckoutApplication v1.4.2 using Java 21.0.2 with PID 1
2026-11-28T08:03:04.772Z  WARN 1 --- [           main] ConfigServletWebServerApplicationContext : Exception encountered during context initialization - cancelling refresh attempt
2026-11-28T08:03:04.790Z ERROR 1 --- [           main] o.s.boot.SpringApplication               : Application run failed

org.springframework.beans.factory.BeanCreationException: Error creating bean with name 'entityManagerFactory' defined in class path resource [org/springframework/boot/autoconfigure/orm/jpa/HibernateJpaConfiguration.class]: Unable to create requested service [org.hibernate.engine.jdbc.env.spi.JdbcEnvironment] due to: Unable to determine Dialect without JDBC metadata
	at org.springframework.beans.factory.support.AbstractAutowireCapableBeanFactory.initializeBean(AbstractAutowireCapableBeanFactory.java:1786) ~[spring-beans-6.1.4.jar!/:6.1.4]
	at org.springframework.beans.factory.support.AbstractAutowireCapableBeanFactory.doCreateBean(AbstractAutowireCapableBeanFactory.java:600) ~[spring-beans-6.1.4.jar!/:6.1.4]
	at org.springframework.boot.SpringApplication.run(SpringApplication.java:334) ~[spring-boot-3.2.3.jar!/:3.2.3]
	at com.shop.CheckoutApplication.main(CheckoutApplication.java:12) ~[!/:1.4.2]
	at java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103) ~[na:na]
	at org.springframework.boot.loader.launch.JarLauncher.main(JarLauncher.java:58) ~[app.jar:1.4.2]
Caused by: org.hibernate.service.spi.ServiceException: Unable to create requested service [org.hibernate.engine.jdbc.env.spi.JdbcEnvironment] due to: Unable to determine Dialect without JDBC metadata
	at org.hibernate.service.internal.AbstractServiceRegistryImpl.createService(AbstractServiceRegistryImpl.java:276) ~[hibernate-core-6.4.4.Final.jar!/:6.4.4.Final]
	at org.hibernate.service.internal.AbstractServiceRegistryImpl.initializeService(AbstractServiceRegistryImpl.java:238) ~[hibernate-core-6.4.4.Final.jar!/:6.4.4.Final]
	... 15 common frames omitted
Caused by: org.postgresql.util.PSQLException: Connection to db:5432 refused. Check that the hostname and port are correct
and that the postmaster is accepting TCP/IP connections.
	at org.postgresql.core.v3.ConnectionFactoryImpl.openConnectionImpl(ConnectionFactoryImpl.java:342) ~[postgresql-42.6.1.jar!/:42.6.1]
	at org.postgresql.core.ConnectionFactory.openConnection(ConnectionFactory.java:54) ~[postgresql-42.6.1.jar!/:42.6.1]
	... 40 common frames omitted
Caused by: java.net.ConnectException: Connection refused
	at java.base/sun.nio.ch.Net.connect0(Native Method) ~[na:na]
	at java.base/sun.nio.ch.Net.connect(Net.java:579) ~[na:na]
	at java.base/java.net.Socket.connect(Socket.java:751) ~[na:na]
	... 52 common frames omitted

"""  # noqa: E501

GO = """\
{"level":"info","ts":1764316800.1,"msg":"listening","addr":":8080"}
panic: runtime error: invalid memory address or nil pointer dereference
[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x6b1f2a]

goroutine 42 [running]:
github.com/shop/checkout/internal/orders.(*Service).Checkout(0x0, {0x8a3c40, 0xc0001a2000}, 0xc000212000)
	/src/internal/orders/service.go:87 +0x2a
github.com/shop/checkout/internal/worker.(*Pool).run(0xc0000a6180)
	/src/internal/worker/pool.go:41 +0x13b
created by github.com/shop/checkout/internal/worker.New in goroutine 1
	/src/internal/worker/pool.go:22 +0x85

goroutine 1 [IO wait]:
internal/poll.runtime_pollWait(0x7f3c1c1b0e28, 0x72)
	/usr/local/go/src/runtime/netpoll.go:345 +0x85
main.main()
	/src/cmd/checkout/main.go:58 +0x3c5
exit status 2
"""  # noqa: E501

NODE_TYPEERROR = """\
2026-11-28T08:05:00.000Z > checkout@2.3.0 start
2026-11-28T08:05:00.000Z > node src/server.js
2026-11-28T08:05:01.200Z listening on :3000
2026-11-28T08:05:07.410Z /app/src/handlers/cart.js:17
2026-11-28T08:05:07.410Z   return user.profile.name;
2026-11-28T08:05:07.410Z                       ^
2026-11-28T08:05:07.410Z
2026-11-28T08:05:07.410Z TypeError: Cannot read properties of undefined (reading 'name')
2026-11-28T08:05:07.410Z     at displayName (/app/src/handlers/cart.js:17:23)
2026-11-28T08:05:07.410Z     at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)
2026-11-28T08:05:07.410Z     at process.processTicksAndRejections (node:internal/process/task_queues:95:5)
2026-11-28T08:05:07.410Z
2026-11-28T08:05:07.410Z Node.js v20.11.0
"""  # noqa: E501

NODE_REJECTION = """\
server started
node:internal/process/promises:289
            triggerUncaughtException(err, true /* fromPromise */);
            ^

Error: connect ECONNREFUSED 127.0.0.1:6379
    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16) {
  errno: -111,
  code: 'ECONNREFUSED',
  syscall: 'connect',
  address: '127.0.0.1',
  port: 6379
}

Node.js v18.17.0
"""


def test_python_chained_direct_cause_reports_the_last_exception_and_the_root() -> None:
    st = stacks.extract_stack(DJANGO)
    assert st is not None
    assert st.runtime == "python"
    assert st.exception_type == "django.db.utils.OperationalError"
    assert st.message.startswith('connection to server at "db"')
    assert "Is the server running" in st.message
    assert st.root_cause.startswith("psycopg2.OperationalError: connection to server")
    # Both tracebacks, the chain sentence, no timestamps, not the next log line.
    assert st.text.startswith("Traceback (most recent call last):")
    assert "The above exception was the direct cause" in st.text
    assert 'File "/app/orders/views.py", line 31, in detail' in st.text
    assert "2026-11-28T" not in st.text
    assert "Worker exiting" not in st.text


def test_python_during_handling_chain_is_one_trace() -> None:
    found = stacks.extract_stacks(FLASK_DURING)
    assert len(found) == 1
    st = found[0]
    assert (st.exception_type, st.message) == ("LookupError", "unknown sku sku-991")
    assert st.root_cause == "KeyError: 'sku-991'"
    assert "During handling of the above exception" in st.text
    assert "POST /checkout HTTP/1.1" not in st.text


def test_spring_boot_startup_failure_with_caused_by_chain() -> None:
    st = stacks.extract_stack(SPRING)
    assert st is not None
    assert st.runtime == "java"
    assert st.exception_type == "org.springframework.beans.factory.BeanCreationException"
    assert st.message.startswith("Error creating bean with name 'entityManagerFactory'")
    assert st.root_cause == "java.net.ConnectException: Connection refused"
    assert st.text.startswith("org.springframework.beans.factory.BeanCreationException")
    # The multi-line Caused-by message and the "... N common frames omitted" lines stay.
    assert "and that the postmaster is accepting" in st.text
    assert st.text.rstrip().endswith("... 52 common frames omitted")
    assert "Application run failed" not in st.text


def test_java_uncaught_in_thread_main() -> None:
    log = (
        'Exception in thread "main" java.lang.IllegalStateException: config missing\n'
        "\tat com.shop.Main.load(Main.java:20)\n"
        "\tat com.shop.Main.main(Main.java:9)\n"
    )
    st = stacks.extract_stack(log)
    assert st is not None
    assert (st.runtime, st.exception_type, st.message) == (
        "java",
        "java.lang.IllegalStateException",
        "config missing",
    )
    assert st.root_cause == ""


def test_go_nil_pointer_panic_with_goroutine_dump() -> None:
    st = stacks.extract_stack(GO)
    assert st is not None
    assert st.runtime == "go"
    assert st.exception_type == "panic"
    assert st.message == "runtime error: invalid memory address or nil pointer dereference"
    assert st.text.startswith("panic: runtime error")
    assert "goroutine 42 [running]:" in st.text
    assert "/src/internal/orders/service.go:87 +0x2a" in st.text
    assert "goroutine 1 [IO wait]:" in st.text
    assert st.text.endswith("exit status 2")
    assert '"listening"' not in st.text


def test_go_fatal_error_and_a_log_line_saying_panic_is_not_a_trace() -> None:
    assert stacks.extract_stack("panic: the disk is full, says the log line\nbye\n") is None
    log = (
        "fatal error: concurrent map writes\n\n"
        "goroutine 7 [running]:\nmain.update(...)\n\t/src/main.go:12\n"
    )
    st = stacks.extract_stack(log)
    assert st is not None
    assert (st.exception_type, st.message) == ("fatal error", "concurrent map writes")


def test_node_type_error_with_uncaught_banner() -> None:
    st = stacks.extract_stack(NODE_TYPEERROR)
    assert st is not None
    assert st.runtime == "node"
    assert st.exception_type == "TypeError"
    assert st.message == "Cannot read properties of undefined (reading 'name')"
    assert st.text.startswith("/app/src/handlers/cart.js:17")
    assert "node:internal/process/task_queues:95:5" in st.text
    assert st.text.endswith("Node.js v20.11.0")
    assert "listening on :3000" not in st.text


def test_node_unhandled_rejection_keeps_error_properties() -> None:
    st = stacks.extract_stack(NODE_REJECTION)
    assert st is not None
    assert (st.runtime, st.exception_type) == ("node", "Error")
    assert st.message == "connect ECONNREFUSED 127.0.0.1:6379"
    assert st.text.startswith("node:internal/process/promises:289")
    assert "code: 'ECONNREFUSED'" in st.text
    assert st.text.endswith("Node.js v18.17.0")


def test_node_error_with_code_in_brackets() -> None:
    log = (
        "Error [ERR_MODULE_NOT_FOUND]: Cannot find package 'express' imported from /app/i.mjs\n"
        "    at packageResolve (node:internal/modules/esm/resolve:844:9)\n"
        "    at moduleResolve (node:internal/modules/esm/resolve:901:20)\n"
    )
    st = stacks.extract_stack(log)
    assert st is not None
    assert st.exception_type == "Error [ERR_MODULE_NOT_FOUND]"


def test_last_trace_is_the_fatal_one_when_several_appear() -> None:
    log = FLASK_DURING + "request ok\n" * 3 + GO
    found = stacks.extract_stacks(log)
    assert [s.runtime for s in found] == ["python", "go"]
    last = stacks.extract_stack(log)
    assert last is not None
    assert last.runtime == "go"
    assert last.line > found[0].line


def test_json_log_lines_with_the_trace_in_a_field() -> None:
    structlog = json.dumps(
        {
            "event": "unhandled",
            "level": "error",
            "exc_info": 'Traceback (most recent call last):\n  File "/app/x.py", line 3, in f\n'
            "    1 / 0\nZeroDivisionError: division by zero",
        }
    )
    logstash = json.dumps(
        {
            "@timestamp": "2026-11-28T08:00:00Z",
            "message": "boom",
            "stack_trace": "java.lang.NullPointerException: x is null\n"
            "\tat com.shop.A.b(A.java:1)\n\tat com.shop.A.main(A.java:2)\n",
        }
    )
    pino = json.dumps(
        {
            "level": 50,
            "err": {
                "type": "RangeError",
                "message": "bad size",
                "stack": "RangeError: bad size\n    at grow (/app/buf.js:3:9)",
            },
        }
    )
    found = stacks.extract_stacks("\n".join(["plain line", structlog, logstash, pino]))
    assert [(s.runtime, s.exception_type) for s in found] == [
        ("python", "ZeroDivisionError"),
        ("java", "java.lang.NullPointerException"),
        ("node", "RangeError"),
    ]


def test_python_exception_group() -> None:
    log = (
        "  + Exception Group Traceback (most recent call last):\n"
        '  |   File "/app/main.py", line 9, in main\n'
        "  |     raise ExceptionGroup('startup failed', [ValueError('a'), KeyError('b')])\n"
        "  | ExceptionGroup: startup failed (2 sub-exceptions)\n"
        "  +-+---------------- 1 ----------------\n"
        "    | ValueError: a\n"
        "    +------------------------------------\n"
    )
    st = stacks.extract_stack(log)
    assert st is not None
    assert (st.exception_type, st.message) == (
        "ExceptionGroup",
        "startup failed (2 sub-exceptions)",
    )


def test_huge_trace_is_bounded_keeping_head_and_tail() -> None:
    frames = "".join(f"\tat com.shop.Deep.f{i}(Deep.java:{i})\n" for i in range(5000))
    log = (
        "java.lang.StackOverflowError: deep\n"
        + frames
        + "Caused by: java.lang.IllegalArgumentException: the real reason\n"
        + "\tat com.shop.Deep.root(Deep.java:1)\n"
    )
    st = stacks.extract_stack(log, max_chars=4000)
    assert st is not None
    assert st.truncated
    assert len(st.text) <= 4000
    assert st.text.startswith("java.lang.StackOverflowError: deep")
    assert "characters truncated" in st.text
    assert st.text.endswith("\tat com.shop.Deep.root(Deep.java:1)")
    assert st.root_cause == "java.lang.IllegalArgumentException: the real reason"


def test_logs_without_traces_yield_nothing() -> None:
    log = "\n".join(
        [
            "2026-11-28T08:00:00Z starting",
            "GET /health 200",
            "WARN: retrying at 08:00:01",
            "    at least one replica is required",
            "error: token expired",
        ]
    )
    assert stacks.extract_stacks(log) == []
    assert stacks.extract_stack("") is None


def test_headline_is_one_line() -> None:
    st = stacks.extract_stack(DJANGO)
    assert st is not None
    assert st.headline == (
        'django.db.utils.OperationalError: connection to server at "db" (10.96.0.12), '
        "port 5432 failed: Connection refused"
    )


def test_kubectl_prefix_and_nanosecond_timestamps_are_stripped() -> None:
    log = "\n".join(
        f"[pod/checkout-7d9f8-abcde/app] 2026-11-28T08:00:00.123456789Z {line[25:]}"
        for line in NODE_TYPEERROR.splitlines()
    )
    st = stacks.extract_stack(log)
    assert st is not None
    assert (st.runtime, st.exception_type) == ("node", "TypeError")
    assert "[pod/" not in st.text
    assert "08:00:00.123456789Z" not in st.text


def test_go_recovered_and_repanicked() -> None:
    log = (
        "panic: boom [recovered]\n"
        "\tpanic: boom again\n\n"
        "goroutine 1 [running]:\n"
        "main.main.func1()\n\t/src/main.go:9 +0x45\n"
        "panic({0x4a1f20?, 0x4e3b30?})\n\t/usr/local/go/src/runtime/panic.go:770 +0x132\n"
        "main.main()\n\t/src/main.go:12 +0x5b\n"
        "after the trace\n"
    )
    st = stacks.extract_stack(log)
    assert st is not None
    assert st.message == "boom [recovered]\npanic: boom again"
    assert st.text.endswith("/src/main.go:12 +0x5b")


def test_kotlin_coroutine_exception_with_suppressed() -> None:
    log = (
        'Exception in thread "DefaultDispatcher-worker-1" '
        "kotlinx.coroutines.JobCancellationException: Job was cancelled\n"
        "\tat kotlinx.coroutines.JobSupport.cancel(JobSupport.kt:1580)\n"
        "\tSuppressed: java.io.IOException: stream closed\n"
        "\t\tat com.shop.Stream.close(Stream.kt:10)\n"
        "\t\t... 3 more\n"
        "Caused by: java.lang.IllegalStateException: no leader\n"
        "\tat com.shop.Raft.leader(Raft.kt:77)\n"
        "next log line\n"
    )
    st = stacks.extract_stack(log)
    assert st is not None
    assert st.exception_type == "kotlinx.coroutines.JobCancellationException"
    assert st.root_cause == "java.lang.IllegalStateException: no leader"
    assert "Suppressed: java.io.IOException" in st.text
    assert "next log line" not in st.text


def test_a_log_tail_that_starts_inside_a_trace_still_yields_it() -> None:
    tail = "\n".join(FLASK_DURING.splitlines()[10:])  # from inside the second traceback
    st = stacks.extract_stack(tail)
    assert st is not None
    assert (st.runtime, st.exception_type) == ("python", "LookupError")
    java = "\n\tat com.shop.A.b(A.java:1)\n\tat com.shop.A.main(A.java:2)\n"
    st = stacks.extract_stack(java)
    assert st is not None
    assert (st.runtime, st.exception_type, st.message) == ("java", "", "")
    assert st.text.startswith("\tat com.shop.A.b(A.java:1)")
