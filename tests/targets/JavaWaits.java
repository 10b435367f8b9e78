// Test fixture (tests/test_jvm.cpp): a JVM whose threads wait the ways a Java
// service's do, read by stackaudit from outside. "monitor_holder" sleeps
// inside a synchronized block, "monitor_waiter" blocks entering it,
// "java_sleeper" is in Thread.sleep and "socket_reader" in a socket read
// whose peer (a socket this process accepted) never writes. Prints
// "ready PID port N" once they are all in place; exits on a line on stdin.
import java.io.InputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;

public class JavaWaits {
  static final Object monitor = new Object();

  static void sleepLong() {
    try {
      Thread.sleep(3_600_000L);
    } catch (InterruptedException e) {
      // the test is over
    }
  }

  static void holder() {
    synchronized (monitor) {
      sleepLong();
    }
  }

  static void waiter() {
    synchronized (monitor) {
      System.out.println("never");
    }
  }

  static void reader(Socket s) {
    try {
      InputStream in = s.getInputStream();
      in.read();
    } catch (Exception e) {
      // the test is over
    }
  }

  public static void main(String[] args) throws Exception {
    InetAddress loopback = InetAddress.getLoopbackAddress();
    ServerSocket server = new ServerSocket(0, 1, loopback);
    Socket client = new Socket(loopback, server.getLocalPort());
    Socket accepted = server.accept();
    Thread holder = new Thread(JavaWaits::holder, "monitor_holder");
    holder.start();
    while (holder.getState() != Thread.State.TIMED_WAITING) Thread.sleep(10);
    Thread sleeper = new Thread(JavaWaits::sleepLong, "java_sleeper");
    sleeper.start();
    Thread waiter = new Thread(JavaWaits::waiter, "monitor_waiter");
    waiter.start();
    Thread reader = new Thread(() -> reader(client), "socket_reader");
    reader.start();
    while (waiter.getState() != Thread.State.BLOCKED
        || sleeper.getState() != Thread.State.TIMED_WAITING
        || reader.getState() != Thread.State.RUNNABLE) {
      Thread.sleep(10);
    }
    System.out.println("ready " + ProcessHandle.current().pid() + " port " + server.getLocalPort());
    System.out.flush();
    System.in.read();
    accepted.close();
    System.exit(0);
  }
}
