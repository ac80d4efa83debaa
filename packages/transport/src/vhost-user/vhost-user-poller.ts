// The fd watcher lives in @xvio/xen (event channel and xenbus fds use it too); vhost-user
// keeps its names for it.
export {
  type FdStreamWatch as EventFdWatch,
  type FdWatch as Watch,
  pollerSettled,
  watchEventFd,
  watchReadable,
} from '@xvio/xen';
