package io.grpc;

/** Shim: adds asRuntimeException(Status, Metadata, boolean), missing from the emulator jar's bundled grpc-api. */
public final class InternalStatus {
  private InternalStatus() {}

  public static final Metadata.Key<String> MESSAGE_KEY = Status.MESSAGE_KEY;
  public static final Metadata.Key<Status> CODE_KEY = Status.CODE_KEY;

  public static StatusRuntimeException asRuntimeExceptionWithoutStacktrace(Status status, Metadata trailers) {
    return new InternalStatusRuntimeException(status, trailers);
  }

  public static StatusRuntimeException asRuntimeException(Status status, Metadata trailers, boolean withoutStacktrace) {
    return withoutStacktrace ? new InternalStatusRuntimeException(status, trailers) : new StatusRuntimeException(status, trailers);
  }
}
