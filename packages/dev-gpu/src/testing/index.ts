export { GpuGuestDriver, type GpuReply, type GuestFramebuffer } from './gpu-guest-driver.js';
